"""One rank's part of a lens request: its blocks of the model's own forward (the engine's tapped
forward with a ``Stage``), then the engine's cell statistics (``lens.grid.lens_grid``) on its own
blocks only. What it returns is compact: per cell and row the top-k, entropy, KL, tracked
tokens' probabilities and ranks; never a hidden state.

On the wire per request (D hidden size, V vocabulary, T padded tokens per prompt, B prompts,
P kept positions per prompt, N ranks, s the stream's bytes per value):
- the residual stream, rank r to r+1: B * T * D * s bytes per hop, N - 1 hops;
- the model's final logits at the kept positions, from the last rank to all (float32, an
  all-sum): B * P * V * 4 bytes, which every rank needs for KL(final || layer) and ranks;
- the statistics back: per cell and row about 12 * top_k + 16 + 8 * tracked bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.split import Split
from lazarus_mcp.lens.batch import _fidelities
from lazarus_mcp.lens.grid import lens_grid
from lazarus_mcp.lens.grid_taps import pad_batch, position_index
from lazarus_mcp.lens.taps import Stage, tapped_forward
from lazarus_mcp.modeling.loading import LoadedModel

ROW_FIELDS = (
    "top_ids",
    "top_probs",
    "entropy",
    "kl",
    "tracked_probs",
    "tracked_ranks",
    "final_top_ranks",
)
FINAL_FIELDS = ("final_top_ids", "final_top_probs", "final_tracked_probs", "final_tracked_ranks")


@dataclass
class StageModel:
    """What a rank holds of one model: its share of the weights and the split."""

    loaded: LoadedModel
    split: Split


def my_rows(rows: list[int | None], rank: int, split: Split) -> list[int | None]:
    """The rows this rank computes: its blocks among ``rows`` (rank 0: the embedding row too);
    the last rank always its last block, whose row carries the final statistics."""
    a, b = split.ranges[rank]
    last = split.num_layers - 1
    mine = [r for r in rows if (r is None and rank == 0) or (r is not None and a <= r < b)]
    if rank == split.ranks - 1 and last not in mine:
        mine.append(last)
    return mine


def _stage(group: Any, rank: int, split: Split, sent: list[mx.array]) -> Stage:
    first, end = split.ranges[rank]

    def send(hidden: mx.array) -> mx.array:
        sent.append(wire.send_stream(group, hidden, rank + 1))
        return sent[-1]

    def receive(hidden: mx.array) -> mx.array:
        return wire.recv_stream(group, hidden, rank - 1)

    return Stage(
        first,
        end,
        receive=receive if rank > 0 else None,
        send=send if rank < split.ranks - 1 else None,
    )


def run_lens(group: Any, held: StageModel, request: dict[str, Any]) -> bytes:
    """This rank's statistics for ``request`` (see ``pipeline.lens_request``), packed."""
    loaded, split = held.loaded, held.split
    rank = group.rank()
    last = split.num_layers - 1
    rows: list[int | None] = request["rows"]
    wanted: list[list[int]] = request["wanted"]
    mine = my_rows(rows, rank, split)
    taps = [r for r in mine if r is not None]
    embeddings = None in mine
    sent: list[mx.array] = []
    with loaded.scope():
        tapped = tapped_forward(
            loaded.model,
            pad_batch(request["batch"], 0),
            position_index(wanted),
            outputs=taps,
            inputs=[0] if embeddings else [],
            embedding_factor=request["factor"],
            windows=loaded.sliding_windows,
            stage=_stage(group, rank, split, sent),
        )
        mx.eval(*sent, *tapped.outputs.values(), *tapped.inputs.values())
        is_last = rank == split.ranks - 1
        num_b, num_p = len(wanted), max(len(w) for w in wanted)
        own = tapped.logits.astype(mx.float32) if is_last else None
        final = wire.broadcast_from(
            group, split.ranks - 1, own, (num_b, num_p, loaded.info.vocab_size), mx.float32
        )
        width = num_p
        cells = mx.array([b * width + j for b, w in enumerate(wanted) for j in range(len(w))])
        captured: dict[int | None, mx.array] = {i: h for i, h in tapped.outputs.items()}
        if embeddings:
            captured[None] = tapped.inputs[0]
        hidden = {r: h.reshape(-1, h.shape[-1])[cells] for r, h in captured.items()}
        fidelities = (
            _fidelities(loaded, tapped.outputs[last], tapped.logits, wanted) if is_last else []
        )
        per_cell = [f for f, w in zip(fidelities, wanted, strict=False) for _ in w]
        lenses = lens_grid(
            loaded.head,
            mine,
            hidden,
            final.reshape(-1, final.shape[-1]),
            last,
            request["top_k"],
            request["tracked"],
            per_cell or [None] * int(cells.shape[0]),  # type: ignore[list-item]
            final_rows=cells,
        )
    arrays = {f: np.stack([getattr(lens, f) for lens in lenses]) for f in ROW_FIELDS}
    if is_last:
        arrays.update({f: np.stack([getattr(lens, f) for lens in lenses]) for f in FINAL_FIELDS})
    meta = {
        "rows": mine,
        "fidelity": [f.model_dump() for f in fidelities],
    }
    return wire.pack(arrays, meta)
