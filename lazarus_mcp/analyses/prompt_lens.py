"""The lens of prompts: one tapped forward over a right-padded batch, then the cell function at
every wanted position, every block at each prompt's last position, and the lens's fidelity.

Every analysis of prompts runs through :func:`lens_pass`: one prompt at its last position
(C = 1), a grid (its positions), a batch (every prompt's positions side by side), and
multi-token tracked strings. A string of several tokens (" 443" is often " 4", "43") is scored
as the model would score it as a continuation: the prompt plus all pieces but the last run as
rows of the same padded batch, each piece's lens log-probability is read at the position before
it (the cell's ``pick``), then summed; row 0 also carries the prompt's own lens at its last
position, which the continuation cannot reach (causal).

Milestones read every block at the last position, whichever blocks are displayed: the forward
keeps every block's output there (``every_at``), and the cell function runs over all blocks at
that one cell, which costs one more [N, V] projection per prompt.
Runs on the MLX worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens import stats
from lazarus_mcp.lens.cells import Cells, CellSpec, Column, Row, cell_stats
from lazarus_mcp.lens.fidelity import fidelities
from lazarus_mcp.lens.readout import Lens
from lazarus_mcp.lens.taps import pad_batch, position_index, tapped_forward
from lazarus_mcp.schema.fidelity import Fidelity


@dataclass(frozen=True)
class LensRequest:
    """What is asked of every prompt of a call."""

    lens: Lens
    rows: list[Row]  # displayed rows: None (the embedding output) first if any, then blocks
    last: int  # block N-1
    top_k: int
    tracked: list[int]
    embedding_factor: float = 1.0
    windows: dict[int, int] = field(default_factory=dict)

    @property
    def blocks(self) -> list[int]:
        return [r for r in self.rows if r is not None]


@dataclass
class LensPass:
    """What one forward and its cells give: ``cells`` at every wanted position of every row,
    row b's from ``starts[b]`` on; per row, every block and the fidelity at its anchor."""

    cells: Cells
    starts: list[int]
    blocks: list[Column]
    fidelity: list[Fidelity]


# A lens pass without its model: ``local_pass(model)`` in one process, or the pipeline's pass
# over a model split across processes (``distributed/pipeline.py``), which returns the same
# :class:`LensPass` rank by rank.
PassFn = Callable[
    [LensRequest, list[list[int]], list[list[int]], list[int], np.ndarray | None], LensPass
]


def local_pass(model: nn.Module) -> PassFn:
    return partial(lens_pass, model)


def lens_pass(
    model: nn.Module,
    request: LensRequest,
    token_rows: list[list[int]],
    wanted: list[list[int]],
    anchors: list[int],
    picks: np.ndarray | None = None,
) -> LensPass:
    """One forward of ``token_rows`` (right-padded); the cells at each row's ``wanted``
    positions (sorted; the ``anchors`` among them); ``picks``: one token per cell, in order."""
    last = request.last
    every_block = list(range(last + 1))
    rows: list[Row] = request.rows
    if set(request.blocks) != set(every_block) and all(
        w == [a] for w, a in zip(wanted, anchors, strict=True)
    ):
        # Only the anchors are read: the cells run over every block at once, one projection.
        rows = [None, *every_block] if None in request.rows else [*every_block]
    blocks_of_rows = [r for r in rows if r is not None]
    needs_every = set(blocks_of_rows) != set(every_block)
    anchor_index = mx.array(anchors, dtype=mx.int32)[:, None, None]
    tapped = tapped_forward(
        model,
        pad_batch(token_rows),
        position_index(wanted),
        outputs=sorted({*blocks_of_rows, last}),
        inputs=[0] if None in rows else [],
        embedding_factor=request.embedding_factor,
        windows=request.windows,
        every_at=anchor_index if needs_every else None,
    )
    # The cells side by side: row b's positions at b * width + j.
    width = max(len(w) for w in wanted)
    flat = [b * width + j for b, w in enumerate(wanted) for j in range(len(w))]
    starts = [sum(len(w) for w in wanted[:b]) for b in range(len(wanted))]
    at_anchor = [starts[b] + wanted[b].index(a) for b, a in enumerate(anchors)]
    cells = mx.array(flat)
    states: dict[Row, mx.array] = {r: tapped.outputs[r] for r in blocks_of_rows}
    if None in rows:
        states[None] = tapped.inputs[0]
    hidden = {r: h.reshape(-1, h.shape[-1])[cells] for r, h in states.items()}
    own = tapped.logits.reshape(-1, tapped.logits.shape[-1])
    spec = CellSpec(request.lens, rows, last, request.top_k, request.tracked)
    result = cell_stats(spec, hidden, own, own_rows=cells, picks=picks)
    anchor_cells = mx.array([flat[k] for k in at_anchor])
    if needs_every:
        every: dict[Row, mx.array] = {i: tapped.every[i][:, 0] for i in every_block}
        block_cells = cell_stats(
            CellSpec(request.lens, every_block, last), every, own, own_rows=anchor_cells
        )
        blocks = [block_cells.column(b) for b in range(len(token_rows))]
    else:
        in_order = result.rows_at(every_block)
        blocks = [in_order.column(k) for k in at_anchor]
    if rows != request.rows:
        result = result.rows_at(request.rows)
    last_hidden = tapped.outputs[last].reshape(-1, tapped.outputs[last].shape[-1])
    fidelity = fidelities(request.lens, last, last_hidden[anchor_cells], own[anchor_cells])
    return LensPass(result, starts, blocks, fidelity)


@dataclass
class PromptLens:
    """One prompt's lens: its wanted positions, every block at its last, and its fidelity."""

    positions: dict[int, Column]
    blocks: Column
    fidelity: Fidelity
    sequence_logprobs: np.ndarray | None = None  # [Q, L]: multi-token strings, per block row
    final_sequence_logprobs: np.ndarray | None = None  # [Q]


def lens_of_prompts(
    run: PassFn, request: LensRequest, prompts: list[list[int]], wanted: list[list[int]]
) -> list[PromptLens]:
    """Prompts of one padded forward, each at its ``wanted`` positions (its last among them)."""
    done = run(request, prompts, wanted, [len(ids) - 1 for ids in prompts], None)
    return [
        PromptLens(
            positions={p: done.cells.column(done.starts[b] + j) for j, p in enumerate(wanted[b])},
            blocks=done.blocks[b],
            fidelity=done.fidelity[b],
        )
        for b in range(len(prompts))
    ]


def lens_with_continuations(
    run: PassFn, request: LensRequest, prompt: list[int], pieces: list[list[int]]
) -> PromptLens:
    """One prompt at its last position, and each string of ``pieces`` (2+ ids each) scored as
    its continuation in the same forward: ``sequence_logprobs`` [Q, L] over the rows."""
    start = len(prompt) - 1
    span = max(len(p) for p in pieces)
    rows = [prompt + p[:-1] for p in pieces]
    positions = list(range(start, start + span))
    picks = np.array([p + [0] * (span - len(p)) for p in pieces], dtype=np.int64)  # [Q, span]
    valid = np.array([[j < len(p) for j in range(span)] for p in pieces])
    done = run(request, rows, [positions] * len(rows), [start] * len(rows), picks.ravel())
    assert done.cells.picked is not None and done.cells.final_picked is not None
    per_row = done.cells.picked.reshape(len(request.rows), len(pieces), span)
    final = done.cells.final_picked.reshape(len(pieces), span)
    return PromptLens(
        positions={start: done.cells.column(0)},
        blocks=done.blocks[0],
        fidelity=done.fidelity[0],
        sequence_logprobs=stats.sequence_logprob(per_row, valid).T,
        final_sequence_logprobs=stats.sequence_logprob(final, valid),
    )
