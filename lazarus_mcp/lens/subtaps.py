"""Taps inside blocks: the residual stream entering each block, after its attention sub-layer,
and leaving it, at chosen positions of one or more sequences, from one forward pass.

What a sub-layer adds is read off the model's own forward, never recomputed: the block's input
and output are the wrapped block's argument and result, and the state between its attention and
its MLP is the input of the block's first MLP-side module (its pre-MLP norm, or the MLP itself
where attention output is normalized before it is added, as in Gemma 2/3 and OLMo 2); the family
registry names that module. So attention's addition is ``mid - input`` (whatever norms or
residual multipliers the block applies) and the MLP's is ``output - mid``.

Several sequences run as one batch, right-padded: causal attention never lets a padding token
reach an earlier position, so each sequence's positions see exactly what they would alone.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.taps import Stage, pad_batch, tapped_forward


@dataclass
class SublayerStates:
    """Residual streams [B, P, D] at the tapped positions, per block, and the model's logits."""

    entered: list[mx.array]  # block i's input; entered[0] is the scaled embedding output
    mid: list[mx.array] | None  # after block i's attention sub-layer; None: parallel blocks
    left: list[mx.array]  # block i's output
    logits: mx.array  # [B, P, V]: the model's own output at the tapped positions


def forward_sublayers(
    model: nn.Module,
    sequences: list[list[int]],
    positions: list[int],
    mid_module: str | None,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
    pad_id: int = 0,
    stage: Stage | None = None,
) -> SublayerStates:
    """One forward pass of the right-padded batch; every block tapped at ``positions``.

    With ``stage`` (a pipeline stage, ``distributed/``) only its blocks run and are tapped:
    ``entered[0]`` is then the input of its first block, and ``logits`` the model's output only
    on the stage that runs the last block."""
    first, end = (0, len(block_list(model))) if stage is None else (stage.first, stage.end)
    every = range(first, end)
    tapped = tapped_forward(
        model,
        pad_batch(sequences, pad_id),
        mx.array(positions, dtype=mx.int32)[None, :, None],
        outputs=every,
        inputs=every,
        mid=mid_module,
        embedding_factor=embedding_factor,
        windows=windows,
        stage=stage,
    )
    return SublayerStates(
        entered=list(tapped.inputs.values()),
        mid=list(tapped.mids.values()) if mid_module is not None else None,
        left=list(tapped.outputs.values()),
        logits=tapped.logits,
    )
