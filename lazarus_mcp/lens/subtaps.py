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

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import UnsupportedModelError
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.head import embedding_slot
from lazarus_mcp.lens.taps import _ScaledEmbedding, _swapped, attention_masks


class _Keep:
    """Stands in for a module; keeps its first argument at the tapped positions."""

    def __init__(self, module: Any, positions: mx.array) -> None:
        self._module = module
        self._positions = positions
        self.captured: mx.array | None = None

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> Any:
        self.captured = x[:, self._positions]
        return self._module(x, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class _TapBlock:
    """Stands in for one block: keeps its input and output at the tapped positions, may hand it
    the attention mask the architecture prescribes, and (last block) hands on only the tapped
    positions so the model's own head runs on them alone."""

    def __init__(
        self, block: Any, positions: mx.array, mask: mx.array | None, truncate: bool
    ) -> None:
        self._block = block
        self._positions = positions
        self._mask = mask
        self._truncate = truncate
        self.entered: mx.array | None = None
        self.left: mx.array | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._mask is not None:
            if "mask" in kwargs or len(args) < 2:
                kwargs["mask"] = self._mask
            else:
                args = (args[0], self._mask, *args[2:])
        self.entered = args[0][:, self._positions]
        out = self._block(*args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        self.left = hidden[:, self._positions]
        if not self._truncate:
            return out
        return (self.left, *out[1:]) if isinstance(out, tuple) else self.left

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


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
) -> SublayerStates:
    """One forward pass of the right-padded batch; every block tapped at ``positions``."""
    blocks = block_list(model)
    length = max(len(s) for s in sequences)
    batch = mx.array([s + [pad_id] * (length - len(s)) for s in sequences])
    where = mx.array(positions, dtype=mx.int32)
    masks = attention_masks(length, windows or {}, len(blocks))
    taps = [
        _TapBlock(blocks[i], where, masks.get(i), truncate=i == len(blocks) - 1)
        for i in range(len(blocks))
    ]
    mids: list[_Keep] = []
    with ExitStack() as stack:
        for i, tap in enumerate(taps):
            if mid_module is not None:
                if mid_module not in blocks[i]:
                    raise UnsupportedModelError(
                        f"block {i} has no '{mid_module}' module to read its attention output by"
                    )
                keep = _Keep(blocks[i][mid_module], where)
                stack.enter_context(_swapped(blocks[i], mid_module, keep))
                mids.append(keep)
            stack.enter_context(_swapped(blocks, i, tap))
        if embedding_factor != 1.0:
            holder, key = embedding_slot(model)
            scaled = _ScaledEmbedding(holder[key], embedding_factor)
            stack.enter_context(_swapped(holder, key, scaled))
        logits = model(batch)
    for i, tap in enumerate(taps):
        if tap.entered is None or tap.left is None or (mids and mids[i].captured is None):
            raise RuntimeError(f"the model's forward never ran block {i} as a whole")
    return SublayerStates(
        entered=[t.entered for t in taps if t.entered is not None],
        mid=[m.captured for m in mids if m.captured is not None] if mids else None,
        left=[t.left for t in taps if t.left is not None],
        logits=logits,
    )
