"""Rank 0 puts the ranks' statistics back together: per cell, the requested rows in order, each
from the rank that ran its block, and the final statistics and fidelity from the last rank.
Exactly the :class:`~lazarus_mcp.lens.compute.LensArrays` one process would have computed."""

from __future__ import annotations

from typing import Any

import numpy as np

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.lens_step import FINAL_FIELDS, ROW_FIELDS
from lazarus_mcp.lens.compute import LensArrays
from lazarus_mcp.schema.fidelity import Fidelity


def merge(parts: list[bytes], rows: list[int | None], wanted: list[list[int]]) -> list[LensArrays]:
    """One :class:`LensArrays` per cell (prompt b's kept positions, in order) from every rank's
    packed answer (``lens_step.run_lens``)."""
    unpacked = [wire.unpack(p) for p in parts]
    where: dict[int | None, tuple[dict[str, np.ndarray], int]] = {}
    for arrays, meta in unpacked:
        for n, row in enumerate(meta["rows"]):
            where.setdefault(row, (arrays, n))
    last_arrays, last_meta = unpacked[-1]
    fidelities = [Fidelity(**f) for f in last_meta["fidelity"]]
    lenses = []
    cell = 0
    for prompt, positions in enumerate(wanted):
        for _ in positions:
            fields: dict[str, Any] = {
                f: np.stack([where[r][0][f][cell, where[r][1]] for r in rows]) for f in ROW_FIELDS
            }
            fields.update({f: last_arrays[f][cell] for f in FINAL_FIELDS})
            lenses.append(LensArrays(layers=rows, fidelity=fidelities[prompt], **fields))
            cell += 1
    return lenses
