"""Taps on the model's own forward pass: the residual stream after selected blocks, the masks the
architecture prescribes where a port ignores them, and the embedding scale the forward applies.

Nothing here re-implements a forward: blocks are wrapped in place for one call and restored.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_causal_mask

from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot


class _Block:
    """Stands in for one block: may hand it another attention mask, may keep its output.

    The captured output is the residual stream at the analyzed position. On the last block the
    wrapper also hands on only that position, so the model's own final norm, unembedding and
    soft-cap run on one vector instead of the whole sequence.
    """

    def __init__(
        self,
        block: nn.Module,
        position: int | None = None,
        truncate: bool = False,
        mask: mx.array | None = None,
    ) -> None:
        self._block = block
        self._position = position
        self._truncate = truncate
        self._mask = mask
        self.captured: mx.array | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._mask is not None:
            if "mask" in kwargs or len(args) < 2:
                kwargs["mask"] = self._mask
            else:
                args = (args[0], self._mask, *args[2:])
        out = self._block(*args, **kwargs)
        if self._position is None:
            return out
        hidden = out[0] if isinstance(out, tuple) else out
        p = self._position
        self.captured = hidden[0, p]
        if not self._truncate:
            return out
        sliced = hidden[:, p : p + 1]
        return (sliced, *out[1:]) if isinstance(out, tuple) else sliced

    def __getattr__(self, name: str) -> Any:
        # The model's loop may read block attributes (e.g. ``use_sliding``).
        return getattr(self._block, name)


def attention_masks(length: int, windows: dict[int, int], num_blocks: int) -> dict[int, mx.array]:
    """Masks for every block when some sliding window is shorter than the prompt, else none.

    Sliding blocks see the causal mask limited to their window, the others the plain causal
    mask, whatever the port would have chosen (see ``hf_config.sliding_windows``).
    """
    if not windows or length <= min(windows.values()):
        return {}
    causal = create_causal_mask(length)
    return {
        i: create_causal_mask(length, window_size=windows[i]) if i in windows else causal
        for i in range(num_blocks)
    }


class _ScaledEmbedding:
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


@contextmanager
def _swapped(container: Any, key: Any, replacement: Any) -> Iterator[None]:
    original = container[key]
    container[key] = replacement
    try:
        yield
    finally:
        container[key] = original


def applied_embedding_scale(model: nn.Module, num_tokens: int = 16) -> float:
    """The factor the model's own forward applies between the embedding lookup and block 0.

    Measured, not assumed: the forward is stopped at the input of block 0 (one lookup of cost).
    """
    layers = block_list(model)
    holder, key = embedding_slot(model)
    ids = mx.arange(num_tokens)[None]
    try:
        with _swapped(layers, 0, _FirstBlockInput(layers[0])):
            model(ids)
    except _StopForward as stop:
        embedded = holder[key](ids).astype(mx.float32)
        fed = stop.value.astype(mx.float32)
        mask = mx.abs(embedded) > 1e-6
        ratio = mx.where(mask, fed / mx.where(mask, embedded, 1.0), 0.0)
        count = mx.maximum(mx.sum(mask), 1)
        return float(mx.sum(ratio) / count)
    raise RuntimeError("the model's forward never reached block 0")


def forward_with_taps(
    model: nn.Module,
    token_ids: list[int],
    layers: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> tuple[dict[int, mx.array], mx.array]:
    """One forward pass; returns {block: hidden [D]} at the last position and the final logits [V].

    The final logits are the model's own (its norm, head and soft-cap), at that position.
    """
    blocks = block_list(model)
    last = len(blocks) - 1
    position = len(token_ids) - 1
    masks = attention_masks(len(token_ids), windows or {}, len(blocks))
    wrapped = {
        i: _Block(
            blocks[i],
            position=position if i in layers or i == last else None,
            truncate=i == last,
            mask=masks.get(i),
        )
        for i in {*layers, last, *masks}
    }
    with ExitStack() as stack:
        for i, block in wrapped.items():
            stack.enter_context(_swapped(blocks, i, block))
        if embedding_factor != 1.0:
            holder, key = embedding_slot(model)
            scaled = _ScaledEmbedding(holder[key], embedding_factor)
            stack.enter_context(_swapped(holder, key, scaled))
        logits = model(mx.array([token_ids]))
    captured: dict[int, mx.array] = {}
    for i in layers:
        hidden = wrapped[i].captured
        if hidden is None:
            raise RuntimeError(f"the model's forward never ran block {i}")
        captured[i] = hidden
    return captured, logits[0, -1]
