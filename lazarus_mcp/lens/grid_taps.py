"""Taps at many positions of many prompts in one forward pass: the grid's and the batch's taps.

Prompts of a batch are padded on the right. A causal model never lets a token see a later one,
so each prompt's tokens attend to exactly the keys they attend to alone, at the same RoPE
positions and inside the same sliding windows: the padding needs no mask of its own, and each
prompt's residual stream equals its single-prompt stream up to float rounding (the matmuls see
other shapes; measured below 1e-6 on the parity checkpoints). Left padding would shift every
RoPE position and need per-row masks.

The selected positions of every captured block are kept ([B, P, D]); the last block hands on
only those positions, so the model's own final norm, head and soft-cap run on [B, P, D] instead
of the whole padded sequence, and its output is the lens of block N-1 at each of them.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot
from lazarus_mcp.lens.taps import _ScaledEmbedding, _swapped, attention_masks


class _GridBlock:
    """Stands in for one block: may hand it another mask, keeps its input or output at the
    selected positions, and on the last block hands on only those positions."""

    def __init__(
        self,
        block: nn.Module,
        index: mx.array,
        keep_output: bool = False,
        keep_input: bool = False,
        truncate: bool = False,
        mask: mx.array | None = None,
    ) -> None:
        self._block = block
        self._index = index  # [B, P, 1] positions per prompt
        self._keep_output = keep_output
        self._keep_input = keep_input
        self._truncate = truncate
        self._mask = mask
        self.input: mx.array | None = None
        self.output: mx.array | None = None

    def _gather(self, hidden: mx.array) -> mx.array:
        return mx.take_along_axis(hidden, self._index, axis=1)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._keep_input:
            self.input = self._gather(args[0])
        if self._mask is not None:
            if "mask" in kwargs or len(args) < 2:
                kwargs["mask"] = self._mask
            else:
                args = (args[0], self._mask, *args[2:])
        out = self._block(*args, **kwargs)
        if not (self._keep_output or self._truncate):
            return out
        hidden = out[0] if isinstance(out, tuple) else out
        kept = self._gather(hidden)
        if self._keep_output:
            self.output = kept
        if not self._truncate:
            return out
        return (kept, *out[1:]) if isinstance(out, tuple) else kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


@dataclass
class GridCapture:
    """The residual stream at the selected positions and the model's own logits there."""

    hidden: dict[int | None, mx.array]  # block (None: embedding output) -> [B, P, D]
    final_logits: mx.array  # [B, P, V]


def pad_batch(batch: list[list[int]], pad_id: int) -> mx.array:
    """Right-padded token ids [B, T]."""
    width = max(len(ids) for ids in batch)
    return mx.array([ids + [pad_id] * (width - len(ids)) for ids in batch])


def position_index(positions: list[list[int]]) -> mx.array:
    """[B, P, 1] gather indices; shorter rows repeat their last position (ignored later)."""
    width = max(len(p) for p in positions)
    return mx.array([p + [p[-1]] * (width - len(p)) for p in positions])[..., None]


def forward_grid(
    model: nn.Module,
    batch: list[list[int]],
    positions: list[list[int]],
    layers: list[int],
    embeddings: bool = False,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
    pad_id: int = 0,
) -> GridCapture:
    """One forward pass over the padded batch; the residual stream of ``layers`` (and of the
    embedding output) at each prompt's ``positions``, and the model's own logits there."""
    blocks = block_list(model)
    last = len(blocks) - 1
    ids = pad_batch(batch, pad_id)
    index = position_index(positions)
    masks = attention_masks(ids.shape[1], windows or {}, len(blocks))
    wrapped = {
        i: _GridBlock(
            blocks[i],
            index,
            keep_output=i in layers,
            keep_input=embeddings and i == 0,
            truncate=i == last,
            mask=masks.get(i),
        )
        for i in {*layers, last, *masks, *([0] if embeddings else [])}
    }
    with ExitStack() as stack:
        for i, block in wrapped.items():
            stack.enter_context(_swapped(blocks, i, block))
        if embedding_factor != 1.0:
            holder, key = embedding_slot(model)
            scaled = _ScaledEmbedding(holder[key], embedding_factor)
            stack.enter_context(_swapped(holder, key, scaled))
        logits = model(ids)
    hidden: dict[int | None, mx.array] = {}
    if embeddings:
        if wrapped[0].input is None:
            raise RuntimeError("the model's forward never ran block 0")
        hidden[None] = wrapped[0].input
    for i in layers:
        kept = wrapped[i].output
        if kept is None:
            raise RuntimeError(f"the model's forward never ran block {i}")
        hidden[i] = kept
    return GridCapture(hidden, logits)
