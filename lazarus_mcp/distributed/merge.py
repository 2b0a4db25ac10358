"""Rank 0 puts the ranks' statistics back together: per cell, the requested rows in order, each
from the rank that ran its block, the final statistics (the model's own output) and the fidelity
from the last rank, and every block at each row's anchor (the milestones). The result is the
:class:`~lazarus_mcp.analyses.prompt_lens.LensPass` one process computes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from lazarus_mcp.analyses.prompt_lens import LensPass
from lazarus_mcp.distributed import wire
from lazarus_mcp.lens.cells import Cells, Row
from lazarus_mcp.schema.fidelity import Fidelity

_FIELDS = [f for f in fields(Cells) if f.metadata]

Part = tuple[dict[str, np.ndarray], list[Row]]


def joined(parts: list[Part], prefix: str, rows: Sequence[Row]) -> Cells:
    """One :class:`Cells` over ``rows``: row fields from the rank holding each row, final
    fields (the model's own output, the same on every rank) from the last rank that has them."""
    where: dict[Row, tuple[dict[str, np.ndarray], int]] = {}
    for arrays, held in parts:
        for n, row in enumerate(held):
            where.setdefault(row, (arrays, n))
    values: dict[str, Any] = {}
    for f in _FIELDS:
        key = f"{prefix}.{f.name}"
        source = next((arrays for arrays, held in reversed(parts) if key in arrays), None)
        if source is None:
            values[f.name] = None
        elif f.metadata["cell_axis"] == 1:
            values[f.name] = np.stack([where[r][0][key][where[r][1]] for r in rows])
        else:
            values[f.name] = source[key]
    return Cells(rows=list(rows), **values)


def merge(
    parts: list[bytes], rows: list[Row], wanted: list[list[int]], num_blocks: int
) -> LensPass:
    """The pass over every row from every rank's packed answer (``lens_step.run_lens``)."""
    unpacked = [wire.unpack(p) for p in parts]
    cells = joined([(a, m["rows"]) for a, m in unpacked], "cells", rows)
    blocks = joined([(a, m["blocks"]) for a, m in unpacked], "blocks", list(range(num_blocks)))
    fidelity = [Fidelity(**f) for f in unpacked[-1][1]["fidelity"]]
    starts = [sum(len(w) for w in wanted[:b]) for b in range(len(wanted))]
    return LensPass(cells, starts, [blocks.column(b) for b in range(len(wanted))], fidelity)
