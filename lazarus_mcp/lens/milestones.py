"""Milestones: the few blocks an agent should read first, from the lens statistics per block.

The analyses pass every block at the last position (``analyses.analysis.block_milestones``), so
a milestone never waits for the next displayed layer: with the demo's evenly spaced layers
0, 4, 5, ' Paris' ranks 1 from block 1, not "from layer 4"."""

from __future__ import annotations

from collections.abc import Sequence

from lazarus_mcp.lens.tokens import TokenText
from lazarus_mcp.schema.fidelity import Milestones, TopChange

ENTROPY_NATS = 1.0


def _first(layers: Sequence[int], hits: Sequence[bool]) -> int | None:
    return next((layer for layer, hit in zip(layers, hits, strict=True) if hit), None)


def _settled(layers: Sequence[int], hits: Sequence[bool]) -> int | None:
    """First layer from which every later given layer hits too."""
    found = None
    for layer, hit in zip(layers, hits, strict=True):
        if hit and found is None:
            found = layer
        elif not hit:
            found = None
    return found


def milestones(
    text: TokenText,
    layers: Sequence[int],
    top1_ids: Sequence[int],
    final_top1_ranks: Sequence[int],
    entropy: Sequence[float],
    final_top1: int,
) -> Milestones:
    """Milestones over the given layers (the analyses give every block)."""
    changes = [
        TopChange(
            layer_idx=layers[n],
            token=text(top1_ids[n]),
            token_id=top1_ids[n],
            previous_token=text(top1_ids[n - 1]),
        )
        for n in range(1, len(layers))
        if top1_ids[n] != top1_ids[n - 1]
    ]
    return Milestones(
        final_token=text(final_top1),
        final_token_id=final_top1,
        rank_le_10_layer=_first(layers, [r <= 10 for r in final_top1_ranks]),
        rank_le_5_layer=_first(layers, [r <= 5 for r in final_top1_ranks]),
        rank_1_layer=_settled(layers, [r == 1 for r in final_top1_ranks]),
        entropy_below_1_layer=_first(layers, [e < ENTROPY_NATS for e in entropy]),
        top1_changes=changes,
    )
