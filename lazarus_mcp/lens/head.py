"""The lens head: final norm -> unembedding -> final-logit transform, as the model does it.

The lens of an intermediate block must be computed exactly as the model computes its own output
from the last block, so the head is assembled from the model's own modules (its final norm, its
``lm_head`` or tied embedding, quantized or not) plus the family's post-unembedding transform,
which the family registry (``modeling/families.py``) names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import UnsupportedModelError

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "norm_f")


def backbone(model: nn.Module) -> Any:
    """The module that holds the block list, the embedding and the final norm."""
    inner = getattr(model, "model", None)
    if inner is None or not isinstance(getattr(inner, "layers", None), list):
        raise UnsupportedModelError(
            f"unsupported model class {type(model).__name__}: no transformer block list found"
        )
    return inner


@dataclass(frozen=True)
class LensHead:
    """Maps residual vectors [..., D] to logits [..., V] the way the model maps its last block."""

    norm: Callable[[mx.array], mx.array]
    unembed: Callable[[mx.array], mx.array]
    softcap: float | None = None
    logit_divisor: float | None = None

    def __call__(self, hidden: mx.array) -> mx.array:
        logits = self.unembed(self.norm(hidden))
        if self.logit_divisor is not None:
            logits = logits / self.logit_divisor
        if self.softcap is not None:
            logits = mx.tanh(logits / self.softcap) * self.softcap
        return logits.astype(mx.float32)


def build_head(
    model: nn.Module, softcap: float | None = None, logit_divisor: float | None = None
) -> LensHead:
    """The head from the model's own final norm and unembedding plus the given transform."""
    inner = backbone(model)
    norm = next((getattr(inner, n) for n in NORM_NAMES if n in inner), None)
    if norm is None:
        raise UnsupportedModelError("unsupported model: no final norm found")
    unembed = model.lm_head if "lm_head" in model else inner.embed_tokens.as_linear
    return LensHead(norm=norm, unembed=unembed, softcap=softcap, logit_divisor=logit_divisor)
