"""The lens head: final norm -> unembedding -> final-logit transform, as each family does it.

The lens of an intermediate block must be computed exactly as the model computes its own output
from the last block, so the head is assembled from the model's own modules (its final norm, its
``lm_head`` or tied embedding, quantized or not) plus the family's post-unembedding transform.
Only families whose head composition is verified by the test suite (lens of block N-1 == the
model's own logits) are accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import UnsupportedModelError

# model_type -> whether the family multiplies its input embeddings by sqrt(hidden_size).
SUPPORTED_FAMILIES: dict[str, bool] = {
    "llama": False,
    "mistral": False,
    "qwen2": False,
    "qwen3": False,
    "phi3": False,
    "olmo2": False,
    "granite": False,
    "gemma": True,
    "gemma2": True,
    "gemma3_text": True,
}

_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "norm_f")


def check_family(family: str) -> None:
    if family not in SUPPORTED_FAMILIES:
        known = ", ".join(sorted(SUPPORTED_FAMILIES))
        raise UnsupportedModelError(
            f"unsupported architecture '{family}': the lens is verified for {known}"
        )


def intended_embedding_scale(family: str, hidden_size: int) -> float | None:
    return math.sqrt(hidden_size) if SUPPORTED_FAMILIES.get(family) else None


def backbone(model: nn.Module) -> nn.Module:
    """The module that holds the block list, the embedding and the final norm."""
    inner = getattr(model, "model", None)
    if inner is None or not isinstance(getattr(inner, "layers", None), list):
        raise UnsupportedModelError(
            f"unsupported model class {type(model).__name__}: no transformer block list found"
        )
    return inner


@dataclass(frozen=True)
class LensHead:
    """Maps residual vectors [L, D] to logits [L, V] the way the model maps its last block."""

    norm: Callable[[mx.array], mx.array]
    unembed: Callable[[mx.array], mx.array]
    softcap: float | None
    logit_divisor: float | None

    def __call__(self, hidden: mx.array) -> mx.array:
        logits = self.unembed(self.norm(hidden))
        if self.logit_divisor is not None:
            logits = logits / self.logit_divisor
        if self.softcap is not None:
            logits = mx.tanh(logits / self.softcap) * self.softcap
        return logits.astype(mx.float32)


def _arg(model: nn.Module, name: str) -> Any:
    return getattr(getattr(model, "args", None), name, None)


def build_head(model: nn.Module) -> LensHead:
    inner = backbone(model)
    norm = next((getattr(inner, n) for n in _NORM_NAMES if n in inner), None)
    if norm is None:
        raise UnsupportedModelError("unsupported model: no final norm found")
    unembed = model.lm_head if "lm_head" in model else inner.embed_tokens.as_linear
    softcap = _arg(model, "final_logit_softcapping") or None
    divisor = _arg(model, "logits_scaling") if _arg(model, "model_type") == "granite" else None
    return LensHead(norm=norm, unembed=unembed, softcap=softcap, logit_divisor=divisor)
