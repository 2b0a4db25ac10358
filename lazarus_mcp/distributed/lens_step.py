"""One rank's part of a lens request: its blocks of the model's own forward (the engine's tapped
forward with a ``Stage``), then the engine's one cell function (``lens.cells.cell_stats``) on its
own rows only, exactly as ``analyses.prompt_lens.lens_pass`` does for the whole model. What it
returns is compact: per cell and row the top-k, entropy, KL, the tracked tokens' probabilities
and ranks; never a hidden state.

On the wire per request (D hidden size, V vocabulary, T padded tokens per prompt, B prompts,
P kept positions per prompt, N ranks, s the stream's bytes per value):
- the residual stream, rank r to r+1: B * T * D * s bytes per hop, N - 1 hops;
- the model's final logits at the kept positions, from the last rank to all (float32, an
  all-sum): B * P * V * 4 bytes, which every rank needs for KL(final || layer) and ranks;
- the statistics back: per cell and row about 12 * top_k + 16 + 8 * tracked bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.link import Hop, Link, link_for
from lazarus_mcp.distributed.split import Split
from lazarus_mcp.lens.cells import Cells, CellSpec, Row, cell_stats
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.readout import make_lens
from lazarus_mcp.lens.taps import pad_batch, position_index, tapped_forward
from lazarus_mcp.modeling.loading import LoadedModel


@dataclass
class StageModel:
    """What a rank holds of one model: its share of the weights and the split."""

    loaded: LoadedModel
    split: Split


def my_rows(rows: list[Row], rank: int, split: Split) -> list[Row]:
    """The rows this rank computes: its blocks among ``rows`` (rank 0: the embedding row too);
    the last rank always block N-1, whose row is the model's own output."""
    a, b = split.ranges[rank]
    last = split.num_layers - 1
    mine = [r for r in rows if (r is None and rank == 0) or (r is not None and a <= r < b)]
    if rank == split.ranks - 1 and last not in mine:
        mine.append(last)
    return mine


def pack_cells(cells: Cells) -> dict[str, np.ndarray]:
    return {
        f.name: getattr(cells, f.name)
        for f in fields(cells)
        if f.metadata and getattr(cells, f.name) is not None
    }


def run_lens(group: Any, held: StageModel, request: dict[str, Any]) -> bytes:
    """This rank's statistics for ``request`` (``pipeline.Pipeline.passer``), packed: its rows
    at every wanted cell (with ``picks``, each cell's pick's log-probability), its blocks at
    every row's anchor (the milestones), and on the last rank the fidelity."""
    batch: list[list[int]] = request["batch"]
    info = held.loaded.info
    stream = (len(batch), max(len(ids) for ids in batch), info.hidden_size)
    final = (len(batch), max(len(w) for w in request["wanted"]), info.vocab_size)
    link = link_for(group, held.split, [Hop(stream, final)], info.compute_dtype)
    return link.guard(lambda: _lens(group, held, request, link))


def _lens(group: Any, held: StageModel, request: dict[str, Any], link: Link) -> bytes:
    loaded, split = held.loaded, held.split
    rank = group.rank()
    is_last = rank == split.ranks - 1
    last = split.num_layers - 1
    first, end = split.ranges[rank]
    batch: list[list[int]] = request["batch"]
    wanted: list[list[int]] = request["wanted"]
    anchors: list[int] = request["anchors"]
    picks = None if request["picks"] is None else np.array(request["picks"], dtype=np.int64)
    rows = my_rows(request["rows"], rank, split)
    blocks = [r for r in rows if r is not None]
    mine_all = list(range(first, end))
    lens = make_lens(loaded, request["lens"])
    with loaded.scope():
        tapped = tapped_forward(
            loaded.model,
            pad_batch(batch),
            position_index(wanted),
            outputs=blocks,
            inputs=[0] if None in rows else [],
            embedding_factor=request["factor"],
            windows=loaded.sliding_windows,
            # Every block at each prompt's last position (the milestones), always: the ranks'
            # columns must have one shape to be joined (top-1, no tracked tokens).
            every_at=mx.array(anchors, dtype=mx.int32)[:, None, None],
            stage=link.stage(),
        )
        mx.eval(
            *link.pending, *tapped.outputs.values(), *tapped.inputs.values(), *tapped.every.values()
        )
        num_p = max(len(w) for w in wanted)
        own_here = tapped.logits.astype(mx.float32) if is_last else None
        shape = (len(batch), num_p, loaded.info.vocab_size)
        final = link.broadcast(own_here)
        own = final.reshape(-1, shape[-1])
        flat = [b * num_p + j for b, w in enumerate(wanted) for j in range(len(w))]
        starts = [sum(len(w) for w in wanted[:b]) for b in range(len(wanted))]
        at_anchor = [starts[b] + wanted[b].index(a) for b, a in enumerate(anchors)]
        cells = mx.array(flat)
        anchor_cells = mx.array([flat[k] for k in at_anchor])
        states: dict[Row, mx.array] = {r: tapped.outputs[r] for r in blocks}
        if None in rows:
            states[None] = tapped.inputs[0]
        hidden = {r: h.reshape(-1, h.shape[-1])[cells] for r, h in states.items()}
        spec = CellSpec(lens, rows, last, request["top_k"], request["tracked"])
        # A middle rank may hold none of the displayed rows (it still runs its blocks).
        result = cell_stats(spec, hidden, own, own_rows=cells, picks=picks) if rows else None
        every: dict[Row, mx.array] = {i: tapped.every[i][:, 0] for i in mine_all}
        at_blocks = cell_stats(CellSpec(lens, mine_all, last), every, own, anchor_cells)
        fidelity = []
        if is_last:
            last_hidden = tapped.outputs[last].reshape(-1, tapped.outputs[last].shape[-1])
            fidelity = fidelities(lens, last, last_hidden[anchor_cells], own[anchor_cells])
    arrays = {f"cells.{k}": v for k, v in pack_cells(result).items()} if result else {}
    arrays |= {f"blocks.{k}": v for k, v in pack_cells(at_blocks).items()}
    meta = {
        "rows": rows,
        "blocks": mine_all,
        "fidelity": [f.model_dump() for f in fidelity],
    }
    return wire.pack(arrays, meta)
