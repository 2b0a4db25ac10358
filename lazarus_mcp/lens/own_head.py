"""The lens head taken from the model's own code, for architectures outside the family registry.

Whatever a model does after its last block (final norm, head, tied or not, logit scales,
soft-caps, any transform its port applies) is run by the model's own forward: the residual
vectors are handed to that forward in place of block 0's output, every other block passes its
input through, and the forward's logits are the lens. Only the code after the block list runs on
the vectors; nothing of it is re-implemented. Whether this reads the residual stream the way the
model reads its last block is not assumed: ``modeling/self_check.py`` proves it at load.
The extra cost is one embedding lookup, norm and head over the projected rows.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import LensHead, blocks


class _Inject:
    """Stands in for block 0: returns the given residual vectors instead of computing."""

    def __init__(self, block: nn.Module, hidden: mx.array) -> None:
        self._block = block
        self._hidden = hidden

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        return self._hidden.astype(x.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


class _PassThrough:
    """Stands in for a later block: hands its input on unchanged."""

    def __init__(self, block: nn.Module) -> None:
        self._block = block

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        return x

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


class OwnTail:
    """Residual vectors [..., D] -> the logits the model's own forward makes of them."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model

    def __call__(self, hidden: mx.array) -> mx.array:
        shape = hidden.shape
        rows = hidden.reshape(1, -1, shape[-1])
        layers = blocks(self._model)
        originals = list(layers)
        with ExitStack() as stack:
            stack.callback(_restore, layers, originals)
            layers[0] = _Inject(originals[0], rows)
            for i in range(1, len(layers)):
                layers[i] = _PassThrough(originals[i])
            logits = self._model(mx.zeros((1, rows.shape[1]), dtype=mx.int32))
        return logits.reshape(*shape[:-1], logits.shape[-1])


def _restore(layers: list[Any], originals: list[Any]) -> None:
    layers[:] = originals


def own_head(model: nn.Module) -> LensHead:
    """A lens head whose whole computation is the model's own code after its block list."""
    return LensHead(norm=_identity, unembed=OwnTail(model))


def _identity(x: mx.array) -> mx.array:
    return x
