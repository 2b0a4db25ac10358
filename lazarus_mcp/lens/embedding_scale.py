"""The embedding scale a model's forward applies between the lookup and block 0, measured, and
the one wrapper that replaces it for a call (``--embedding-scale``; Gemma's sqrt(hidden)).

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot, swapped


class ScaledEmbedding:
    """Multiplies the embedding lookup by a factor; everything else (``as_linear``) is untouched."""

    def __init__(self, embedding: nn.Module, factor: float) -> None:
        self._embedding = embedding
        self._factor = factor

    def __call__(self, ids: mx.array) -> mx.array:
        out = self._embedding(ids)
        return out * mx.array(self._factor, dtype=out.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedding, name)


class _StopForward(Exception):
    def __init__(self, value: mx.array) -> None:
        self.value = value


class _FirstBlockInput:
    def __init__(self, block: nn.Module) -> None:
        self._block = block

    def __call__(self, hidden: mx.array, *args: Any, **kwargs: Any) -> Any:
        raise _StopForward(hidden)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


def applied_embedding_scale(
    model: nn.Module, num_tokens: int = 16, embedding_name: str | None = None
) -> float:
    """The factor the model's own forward applies between the embedding lookup and block 0.

    Measured, not assumed: the forward is stopped at the input of block 0 (one lookup of cost).
    """
    layers = block_list(model)
    holder, key = embedding_slot(model, embedding_name)
    ids = mx.arange(num_tokens)[None]
    try:
        with swapped(layers, 0, _FirstBlockInput(layers[0])):
            model(ids)
    except _StopForward as stop:
        embedded = holder[key](ids).astype(mx.float32)
        fed = stop.value.astype(mx.float32)
        mask = mx.abs(embedded) > 1e-6
        ratio = mx.where(mask, fed / mx.where(mask, embedded, 1.0), 0.0)
        count = mx.maximum(mx.sum(mask), 1)
        return float(mx.sum(ratio) / count)
    raise RuntimeError("the model's forward never reached block 0")
