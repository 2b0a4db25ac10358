"""One rank's part of ``generate``: its blocks' KV caches, kept between requests, and per step
its rows of the lens at the new position (``lens.step`` and ``lens.cells``, the code one process
runs).

``gen_start`` makes each rank's cache (the model's own kind; only its blocks' entries ever grow)
and, on the last rank, the seeded sampler. Each ``gen_step`` feeds the prompt (first step) or
the token emitted before: the new positions' residual stream goes rank to rank through the
cached forward; the last rank computes the model's own logits, samples the next token with the
seed and sends logits and token to every rank (V + 1 float32 values per step: every rank needs
the logits for KL and ranks, and the token to follow it at its rows). Each rank then returns its
rows' statistics at the step's position; rank 0 joins them and finishes the step as one process
does (``generation.cells.with_emitted``). Per step on the wire: D * s bytes per token per hop,
(V + 1) * 4 bytes of logits and token, and the rows' statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.lens_step import StageModel, pack_cells
from lazarus_mcp.distributed.link import Hop, Link, link_for
from lazarus_mcp.generation.sampling import Sampler
from lazarus_mcp.lens.cells import CellSpec, Row, cell_stats
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.readout import Lens, make_lens
from lazarus_mcp.lens.step import Steps, start_steps


@dataclass
class RankRun:
    """One generation's state on one rank."""

    held: StageModel
    steps: Steps
    lens: Lens
    sampler: Sampler | None  # the last rank's


def start_run(group: Any, held: StageModel, request: dict[str, Any]) -> RankRun:
    loaded = held.loaded
    is_last = group.rank() == held.split.ranks - 1
    with loaded.scope():
        steps = start_steps(loaded.model, request["factor"], loaded.sliding_windows)
        sampler = (
            Sampler(request["temperature"], request["top_p"], request["seed"]) if is_last else None
        )
    return RankRun(held, steps, make_lens(loaded, request["lens"]), sampler)


def run_step(group: Any, run: RankRun, request: dict[str, Any]) -> bytes:
    """This rank's rows of one step (``pipeline.ShardedSteps.step``), packed."""
    info = run.held.loaded.info
    hop = Hop((1, len(request["fed"]), info.hidden_size), (info.vocab_size + 1,))
    link = link_for(group, run.held.split, [hop], info.compute_dtype)
    return link.guard(lambda: _step(group, run, request, link))


def _step(group: Any, run: RankRun, request: dict[str, Any], link: Link) -> bytes:
    loaded, split = run.held.loaded, run.held.split
    rank = group.rank()
    is_last = rank == split.ranks - 1
    last = split.num_layers - 1
    first, end = split.ranges[rank]
    rows: list[Row] = [r for r in request["rows"] if r is not None and first <= r < end]
    if is_last and last not in rows:
        rows.append(last)
    vocab = loaded.info.vocab_size
    with loaded.scope():
        tapped = run.steps.feed(
            request["fed"],
            outputs=[r for r in rows if r is not None],
            stage=link.stage(),
        )
        mx.eval(*link.pending, *tapped.outputs.values())
        here = None
        if is_last:
            assert run.sampler is not None
            logits = tapped.logits[0, -1]
            token = run.sampler.choose(logits)
            # The token rides with the logits as a float32: exact below 2**24 (any vocabulary).
            here = mx.concatenate([logits.astype(mx.float32), token.astype(mx.float32)[None]])
        both = link.broadcast(here)
        own = both[:vocab]
        token_id = int(np.array(both[vocab:]).astype(np.int64)[0])
        tracked = [*request["tracked"], token_id]
        spec = CellSpec(run.lens, rows, last, request["top_k"], tracked)
        hidden: dict[Row, mx.array] = {
            r: tapped.outputs[r][0, -1][None] for r in rows if r is not None and r != last
        }
        # A middle rank may hold none of the displayed rows (it still runs its blocks).
        cells = cell_stats(spec, hidden, own[None]) if rows else None
        meta: dict[str, Any] = {"rows": rows, "token": token_id}
        if is_last:
            captured = tapped.outputs[last][0, -1]
            [fidelity] = fidelities(run.lens, last, captured[None], own[None])
            meta["fidelity"] = fidelity.model_dump()
    arrays = {f"cells.{k}": v for k, v in pack_cells(cells).items()} if cells else {}
    return wire.pack(arrays, meta)
