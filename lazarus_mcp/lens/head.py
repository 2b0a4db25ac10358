"""The lens head: final norm -> unembedding -> final-logit transform, as the model does it.

The lens of an intermediate block must be computed exactly as the model computes its own output
from the last block, so the head is assembled from the model's own modules (its final norm, its
``lm_head`` or tied embedding, quantized or not) plus the family's post-unembedding transform,
which the family registry (``modeling/families.py``) names.

The parts are found by structure, not by family: the block list is mlx-lm's own ``Model.layers``
(every mlx-lm model exposes it for its caches), the text model of a multimodal container is its
``language_model``, and the backbone is the module that holds the block list. A model outside the
registry gets its head from the model's own code instead (``lens/own_head.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import UnsupportedModelError

# Module names are the family registry's (``modeling/families.py``, ``Names``), passed in by
# the load; unnamed, a module is found by its kind (for models outside the registry).
_NORM_KINDS = (nn.RMSNorm, nn.LayerNorm)


def text_model(model: nn.Module) -> Any:
    """The language model: a multimodal container's ``language_model``, else the model."""
    inner = getattr(model, "language_model", None)
    return inner if isinstance(inner, nn.Module) else model


def _owner(module: nn.Module, layers: list[Any], depth: int) -> tuple[Any, list[Any]] | None:
    """(module, list) where the module stores a list holding the same blocks as ``layers``."""
    for value in module.values():
        same = isinstance(value, list) and len(value) == len(layers)
        if same and all(a is b for a, b in zip(value, layers, strict=True)):
            return module, value
    if depth == 0:
        return None
    for value in module.values():
        if isinstance(value, nn.Module):
            found = _owner(value, layers, depth - 1)
            if found is not None:
                return found
    return None


def _located(model: nn.Module) -> tuple[Any, list[Any]]:
    layers = getattr(model, "layers", None)
    if isinstance(layers, list) and layers:
        # ``Model.layers`` may be a copy (pipeline ports slice it): find the stored list.
        found = _owner(model, layers, depth=3)
        if found is not None:
            return found
        raise UnsupportedModelError(
            f"unsupported model class {type(model).__name__}: its block list has no owner module"
        )
    raise UnsupportedModelError(
        f"unsupported model class {type(model).__name__}: no transformer block list found"
    )


def blocks(model: nn.Module) -> list[Any]:
    """The model's residual block list, the stored list itself (entries may be swapped)."""
    return _located(model)[1]


def backbone(model: nn.Module) -> Any:
    """The module that holds the block list (and, in mlx-lm's ports, embedding and final norm)."""
    return _located(model)[0]


def _is_embedding(value: Any) -> bool:
    # A stand-in may declare itself the token embedding (a pipeline rank's, which holds no table).
    if getattr(value, "stands_for_token_embedding", False):
        return True
    kinds = (nn.Embedding, nn.QuantizedEmbedding)
    return isinstance(value, kinds) or callable(getattr(value, "as_linear", None))


def embedding_slot(model: nn.Module, name: str | None = None) -> tuple[Any, str]:
    """(module, key) of the token embedding, so a forward can swap it for one call: the
    backbone's module ``name``, or unnamed its first embedding table (the registry's name is
    checked to be that one at load)."""
    inner = backbone(model)
    if name is not None:
        if name in inner:
            return inner, name
        raise UnsupportedModelError(f"unsupported model: no token embedding '{name}' found")
    for key, value in inner.items():
        if _is_embedding(value):
            return inner, key
    raise UnsupportedModelError("unsupported model: no token embedding found")


def embedding(model: nn.Module, name: str | None = None) -> Any:
    holder, key = embedding_slot(model, name)
    return holder[key]


def unembedding_module(model: nn.Module, name: str | None = None) -> Any:
    """The module whose rows are the output vocabulary (``name``, on the language model or its
    backbone; unnamed, the language model's own linear layer), or None where it is the tied
    embedding."""
    if name is not None:
        for owner in (text_model(model), backbone(model)):
            if name in owner and isinstance(owner[name], nn.Module):
                return owner[name]
        return None
    linear = [
        v for v in text_model(model).values() if isinstance(v, (nn.Linear, nn.QuantizedLinear))
    ]
    # The one mapping to as many rows as the token embedding has (the vocabulary), if any.
    rows = embedding(model).weight.shape[0]
    return next((v for v in linear if v.weight.shape[0] == rows), linear[0] if linear else None)


def final_norm(model: nn.Module, name: str | None = None) -> Any:
    """The backbone's final norm: module ``name``, or unnamed its one norm module."""
    inner = backbone(model)
    if name is not None:
        if name in inner:
            return inner[name]
        raise UnsupportedModelError(f"unsupported model: no final norm '{name}' found")
    norms = [value for value in inner.values() if isinstance(value, _NORM_KINDS)]
    if len(norms) != 1:
        raise UnsupportedModelError("unsupported model: no single final norm found")
    return norms[0]


@contextmanager
def swapped(container: Any, key: Any, replacement: Any) -> Iterator[None]:
    """``container[key]`` is ``replacement`` while open (a block, a module of a block, the
    embedding), restored after, whatever happens."""
    original = container[key]
    container[key] = replacement
    try:
        yield
    finally:
        container[key] = original


@dataclass(frozen=True)
class LensHead:
    """Maps residual vectors [..., D] to logits [..., V] the way the model maps its last block."""

    norm: Callable[[mx.array], mx.array]
    unembed: Callable[[mx.array], mx.array]
    softcap: float | None = None
    logit_divisor: float | None = None
    logit_multiplier: float | None = None

    @property
    def logit_factor(self) -> float | None:
        """The linear factor on the logits before the soft-cap (None: 1)."""
        if self.logit_multiplier is None and self.logit_divisor is None:
            return None
        return (self.logit_multiplier or 1.0) / (self.logit_divisor or 1.0)

    def __call__(self, hidden: mx.array) -> mx.array:
        logits = self.unembed(self.norm(hidden))
        if self.logit_multiplier is not None:
            logits = logits * self.logit_multiplier
        if self.logit_divisor is not None:
            logits = logits / self.logit_divisor
        if self.softcap is not None:
            logits = mx.tanh(logits / self.softcap) * self.softcap
        return logits.astype(mx.float32)


def build_head(
    model: nn.Module,
    softcap: float | None = None,
    logit_divisor: float | None = None,
    logit_multiplier: float | None = None,
    norm_name: str | None = None,
    unembedding_name: str | None = None,
    embedding_name: str | None = None,
) -> LensHead:
    """The head from the model's own final norm and unembedding (named as the family registry
    names them), plus the given transform."""
    head = unembedding_module(model, unembedding_name)
    unembed = head if head is not None else embedding(model, embedding_name).as_linear
    return LensHead(
        norm=final_norm(model, norm_name),
        unembed=unembed,
        softcap=softcap,
        logit_divisor=logit_divisor,
        logit_multiplier=logit_multiplier,
    )
