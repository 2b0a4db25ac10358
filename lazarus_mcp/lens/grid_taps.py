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

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.taps import tapped_forward


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
    tapped = tapped_forward(
        model,
        pad_batch(batch, pad_id),
        position_index(positions),
        outputs=layers,
        inputs=[0] if embeddings else [],
        embedding_factor=embedding_factor,
        windows=windows,
    )
    hidden: dict[int | None, mx.array] = {i: tapped.outputs[i] for i in layers}
    if embeddings:
        hidden = {None: tapped.inputs[0], **hidden}
    return GridCapture(hidden, tapped.logits)
