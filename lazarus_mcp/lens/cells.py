"""The one cell function: every statistic of the lens at C cells (positions of prompts) and L
rows (the embedding output and blocks), computed in chunks of cells.

Every analysis reads its numbers here: the last position of one prompt is C = 1, a grid or a
batch is C = its cells, attribute and compare read one cell. Each chunk is projected in MLX
through the :class:`~lazarus_mcp.lens.readout.Lens` (:func:`row_logits`, where block N-1's row is
the model's own output, once for every analysis), evaluated, and its statistics computed by
:func:`statistics`: the fused C kernel (``accel/cell_stats.py``, two passes per row) where it
is built, numpy's definitions (``stats``) elsewhere. Either computes each row alone, so the same
prompt, position and forward give bitwise the same probabilities whichever analysis asked; a
batch member differs from its single run only by the forward's rounding (other matmul shapes,
below 1e-6).

A full [L, C, V] float32 array is never built for more than one chunk: cells are taken as many
at a time as keep one [L, chunk, V] array under ``CHUNK_BYTES`` (at least one cell). A chunk's
working set under numpy's statistics is about a dozen such arrays (logits, log-probs, probs,
exponentials, products in the entropy and KL sums, one comparison per tracked token at a time;
the fused kernel's is the logits, their numpy copy and the own rows' probabilities), so the
peak is at most

    C * V * 4 bytes (the model's own logits at the C cells, which its forward returns at once)
    + about 12 * max(CHUNK_BYTES, L * V * 4)

whatever the prompt length. Measured (``python examples/grid_memory.py``): vocab 262,144, the
embedding row and 4 blocks, 1,000 positions: MLX's peak 1.14 GB above the weights, of which
1.05 GB are the model's logits; Python and numpy's peak 0.21 GB; the process's peak RSS grew
by 1.36 GB (1.08 / 0.23 / 1.43 GB with the grid's own statistics before this module). One
[L, P, V] float32 array alone would be 5.2 GB. The deadline and cancellation are checked
between chunks.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.accel import cell_stats as fused
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.fidelity import fidelity
from lazarus_mcp.lens.interrupt import check_interrupt
from lazarus_mcp.lens.readout import Lens
from lazarus_mcp.schema import Fidelity

CHUNK_BYTES = 32 << 20

Row = int | None  # a block index, or None for the embedding output

# Where a field's cell axis is: row fields are [L, C, ...], final fields [C, ...].
_ROW = {"cell_axis": 1}
_FINAL = {"cell_axis": 0}


def check_top_k(top_k: int, vocab_size: int) -> None:
    """The one check of ``top_k`` against the model's vocabulary."""
    if not 1 <= top_k <= vocab_size:
        raise InvalidRequestError(f"top_k must be between 1 and {vocab_size} (the vocab size)")


def chunk_cells(num_rows: int, vocab: int, chunk_bytes: int | None = None) -> int:
    """How many cells one chunk takes: [num_rows, chunk, vocab] float32 under the budget."""
    budget = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    return max(1, budget // (4 * vocab * max(1, num_rows)))


@dataclass(frozen=True)
class CellSpec:
    """What every chunk shares: the lens, the rows and the statistics asked for."""

    lens: Lens
    rows: Sequence[Row]  # in display order
    last: int | None  # block N-1: its row is the model's own output (None: no row is)
    top_k: int = 1
    tracked: Sequence[int] = ()
    # The fidelity check too: block N-1's lens row joins the same projection as the others
    # (one pass over the head's weights instead of a second, ``fidelity.fidelities``'s own).
    fidelity: bool = False


@dataclass
class Column:
    """One cell's statistics: row fields [L, ...], final fields (the model's own output) [...]."""

    rows: list[Row]
    top_ids: np.ndarray  # [L, k]
    top_probs: np.ndarray  # [L, k]
    entropy: np.ndarray  # [L], nats
    kl: np.ndarray  # [L]: KL(final || row), nats
    tracked_probs: np.ndarray  # [L, T]
    tracked_ranks: np.ndarray  # [L, T], 1-based over the vocabulary
    final_top_ranks: np.ndarray  # [L]: rank of the model's own top-1 token in each row
    final_top_ids: np.ndarray  # [k]
    final_top_probs: np.ndarray  # [k]
    final_tracked_probs: np.ndarray  # [T]
    final_tracked_ranks: np.ndarray  # [T]
    picked: np.ndarray | None = None  # [L]: log-probability of the cell's pick
    final_picked: np.ndarray | None = None  # []: the same under the model's own output


@dataclass
class Cells:
    """The statistics of C cells; the same fields as :class:`Column` with a cell axis."""

    rows: list[Row]
    top_ids: np.ndarray = field(metadata=_ROW)  # [L, C, k]
    top_probs: np.ndarray = field(metadata=_ROW)  # [L, C, k]
    entropy: np.ndarray = field(metadata=_ROW)  # [L, C]
    kl: np.ndarray = field(metadata=_ROW)  # [L, C]
    tracked_probs: np.ndarray = field(metadata=_ROW)  # [L, C, T]
    tracked_ranks: np.ndarray = field(metadata=_ROW)  # [L, C, T]
    final_top_ranks: np.ndarray = field(metadata=_ROW)  # [L, C]
    final_top_ids: np.ndarray = field(metadata=_FINAL)  # [C, k]
    final_top_probs: np.ndarray = field(metadata=_FINAL)  # [C, k]
    final_tracked_probs: np.ndarray = field(metadata=_FINAL)  # [C, T]
    final_tracked_ranks: np.ndarray = field(metadata=_FINAL)  # [C, T]
    picked: np.ndarray | None = field(default=None, metadata=_ROW)  # [L, C]
    final_picked: np.ndarray | None = field(default=None, metadata=_FINAL)  # [C]
    fidelity: list[Fidelity] | None = None  # [C], where the spec asked for it

    @property
    def num_cells(self) -> int:
        return int(self.final_top_ids.shape[0])

    def column(self, j: int) -> Column:
        """Cell ``j`` alone."""
        values: dict[str, Any] = {
            f.name: _take(getattr(self, f.name), f.metadata["cell_axis"], j)
            for f in fields(self)
            if f.metadata
        }
        return Column(rows=self.rows, **values)

    def rows_at(self, wanted: Sequence[Row]) -> Cells:
        """These statistics for a subset of the rows (in the order given)."""
        index = [self.rows.index(r) for r in wanted]
        values: dict[str, Any] = {
            f.name: getattr(self, f.name)
            if f.metadata.get("cell_axis") != 1 or getattr(self, f.name) is None
            else getattr(self, f.name)[index]
            for f in fields(self)
            if f.metadata
        }
        return Cells(rows=list(wanted), **values)


def _take(array: np.ndarray | None, axis: int, j: int) -> np.ndarray | None:
    return None if array is None else np.take(array, j, axis=axis)


def _join(parts: list[Cells]) -> Cells:
    if len(parts) == 1:
        return parts[0]
    values: dict[str, Any] = {}
    for f in fields(Cells):
        if not f.metadata:
            continue
        arrays = [getattr(p, f.name) for p in parts]
        joined = None if arrays[0] is None else np.concatenate(arrays, axis=f.metadata["cell_axis"])
        values[f.name] = joined
    checks = [p.fidelity for p in parts]
    fidelity = None if checks[0] is None else [f for check in checks for f in check or []]
    return Cells(rows=parts[0].rows, **values, fidelity=fidelity)


def row_logits(
    lens: Lens,
    rows: Sequence[Row],
    hidden: Mapping[Row, mx.array],
    own: mx.array,
    last: int | None,
    lens_last: bool = False,
) -> mx.array:
    """[L, C, V] float32 logits of each row at C cells: ``hidden[row]`` [C, D] through the lens,
    except block N-1, whose row is the model's own output ``own`` [C, V] (its lens under any
    lens; the lens itself is checked against it by ``fidelity``). ``lens_last``: block N-1's
    lens row (from ``hidden[last]``) is appended, projected with the others: [L + 1, C, V]."""
    projected = [r for r in rows if not _is_own(r, last)]
    if lens_last and last is not None:
        projected.append(last)
    own32 = own.astype(mx.float32)
    lensed = {}
    if projected:
        stacked = lens.readout_rows(mx.stack([hidden[r] for r in projected]), projected)
        lensed = {r: stacked[n] for n, r in enumerate(projected)}
    shown = [own32 if _is_own(r, last) else lensed[r] for r in rows]
    return mx.stack([*shown, lensed[last]] if lens_last and last is not None else shown)


def _is_own(row: Row, last: int | None) -> bool:
    return last is not None and row == last


def statistics(
    logits: np.ndarray,
    own: np.ndarray,
    rows: Sequence[Row],
    top_k: int,
    tracked: Sequence[int] = (),
    picks: np.ndarray | None = None,
) -> Cells:
    """Every statistic of rows' logits [L, C, V] against the model's own output [C, V]: by the
    fused kernel where it is built (``accel/cell_stats.py``), else by numpy's reference."""
    if fused.available():
        return fused_statistics(logits, own, rows, top_k, tracked, picks)
    return reference_statistics(logits, own, rows, top_k, tracked, picks)


def reference_statistics(
    logits: np.ndarray,
    own: np.ndarray,
    rows: Sequence[Row],
    top_k: int,
    tracked: Sequence[int] = (),
    picks: np.ndarray | None = None,
) -> Cells:
    """``statistics`` by the numpy definitions of ``stats``. Top-k and ranks compare the logits
    themselves: a log-probability rounds (x - max) - log(sum) and can merge neighbours."""
    final_lp, final_p = stats.softmax_pair(own)
    logprobs, probs = stats.softmax_pair(logits)
    ids = np.asarray(tracked, dtype=np.int64)
    top_ids = stats.top_k(logits, top_k)
    final_ids = stats.top_k(own, top_k)  # [C, k]
    return Cells(
        rows=list(rows),
        top_ids=top_ids,
        top_probs=np.take_along_axis(probs, top_ids, axis=-1),
        entropy=stats.entropy(logprobs, probs),
        kl=stats.kl_divergence(final_lp[None], final_p[None], logprobs),
        tracked_probs=probs[..., ids],
        tracked_ranks=stats.ranks(logits, ids),
        final_top_ranks=stats.rank_of(logits, final_ids[:, 0]),
        final_top_ids=final_ids,
        final_top_probs=np.take_along_axis(final_p, final_ids, axis=-1),
        final_tracked_probs=final_p[..., ids],
        final_tracked_ranks=stats.ranks(own, ids),
        picked=None if picks is None else stats.picked(logprobs, picks),
        final_picked=None if picks is None else stats.picked(final_lp, picks),
    )


def fused_statistics(
    logits: np.ndarray,
    own: np.ndarray,
    rows: Sequence[Row],
    top_k: int,
    tracked: Sequence[int] = (),
    picks: np.ndarray | None = None,
    simd: bool = True,
) -> Cells:
    """``statistics`` by the fused kernel: the model's own rows first (their probabilities are
    the KL's reference), then every row, each asked for the tracked ids, the model's top-1 and
    the cell's pick. A cell with a non-finite logit in any row is computed by the reference.
    ``simd=False``: the kernel's scalar loop (CPUs without AVX-512)."""
    num_rows, num_cells, vocab = logits.shape
    ids = np.asarray(tracked, dtype=np.int32)
    count = len(ids)
    extra = [] if picks is None else [np.asarray(picks, np.int32)[:, None]]
    final = fused.row_stats(
        own, top_k, np.concatenate([np.broadcast_to(ids, (num_cells, count)), *extra], axis=1),
        probs=True, simd=simd,
    )  # fmt: skip
    leader = np.where(final.bad, 0, final.top_ids[:, 0]).astype(np.int32)[:, None]
    per_cell = np.concatenate([np.broadcast_to(ids, (num_cells, count)), leader, *extra], axis=1)
    cell_of = np.tile(np.arange(num_cells, dtype=np.int32), num_rows)
    got = fused.row_stats(
        logits.reshape(num_rows * num_cells, vocab), top_k, per_cell[cell_of],
        fused.Reference(own, final, cell_of), simd=simd,
    )  # fmt: skip

    def shaped(array: np.ndarray) -> np.ndarray:  # [L * C, ...] -> [L, C, ...], C order
        return np.ascontiguousarray(array.reshape(num_rows, num_cells, *array.shape[1:]))

    assert got.kl is not None
    cells = Cells(
        rows=list(rows),
        top_ids=shaped(got.top_ids),
        top_probs=shaped(got.top_probs),
        entropy=shaped(got.entropy),
        kl=shaped(got.kl),
        tracked_probs=shaped(got.id_probs[:, :count]),
        tracked_ranks=shaped(got.id_ranks[:, :count]),
        final_top_ranks=shaped(got.id_ranks[:, count]),
        final_top_ids=final.top_ids,
        final_top_probs=final.top_probs,
        final_tracked_probs=np.ascontiguousarray(final.id_probs[:, :count]),
        final_tracked_ranks=np.ascontiguousarray(final.id_ranks[:, :count]),
        picked=None if picks is None else shaped(got.id_logprobs[:, count + 1]),
        final_picked=None if picks is None else np.ascontiguousarray(final.id_logprobs[:, count]),
    )
    bad = final.bad | shaped(got.bad).any(axis=0)
    if bad.any():
        _splice(cells, bad, reference_statistics(
            logits[:, bad], own[bad], rows, top_k, tracked, None if picks is None else picks[bad]
        ))  # fmt: skip
    return cells


def _splice(cells: Cells, where: np.ndarray, part: Cells) -> None:
    """Write ``part`` (the cells ``where`` marks) into ``cells``."""
    for f in fields(Cells):
        if f.metadata and getattr(cells, f.name) is not None:
            target = getattr(cells, f.name)
            index = (slice(None), where) if f.metadata["cell_axis"] == 1 else (where,)
            target[index] = getattr(part, f.name)


def cell_stats(
    spec: CellSpec,
    hidden: Mapping[Row, mx.array],
    own: mx.array,
    own_rows: mx.array | None = None,
    picks: np.ndarray | None = None,
    chunk_bytes: int | None = None,
) -> Cells:
    """The lens statistics at C cells, a chunk of cells at a time.

    ``hidden`` maps each row but block N-1 to [C, D]; ``own`` [C, V] is the model's own output
    there, or, with ``own_rows`` [C], the rows of ``own`` to read, gathered a chunk at a time
    (a gather of them all would copy the largest array there is). ``picks`` [C]: one token per
    cell whose log-probability is kept (``picked``: a multi-token string's pieces)."""
    vocab = own.shape[-1]
    num_cells = own.shape[0] if own_rows is None else own_rows.shape[0]
    check = spec.fidelity and spec.last is not None
    step = chunk_cells(len(spec.rows) + check, vocab, chunk_bytes)
    parts: list[Cells] = []
    for start in range(0, num_cells, step):
        check_interrupt()
        window = slice(start, start + step)
        chunk = {r: h[window] for r, h in hidden.items() if check or not _is_own(r, spec.last)}
        mine = own[window] if own_rows is None else own[own_rows[window]]
        logits = row_logits(spec.lens, spec.rows, chunk, mine, spec.last, check)
        mine = mine.astype(mx.float32)
        mx.eval(logits, mine)
        # numpy copies; the MLX arrays are dropped before the statistics run (the peak).
        arrays = np.array(logits), np.array(mine)
        del logits, mine
        lensed_last = arrays[0][-1] if check else None
        part = statistics(
            arrays[0][:-1] if check else arrays[0],
            arrays[1],
            spec.rows,
            spec.top_k,
            spec.tracked,
            None if picks is None else picks[window],
        )
        if lensed_last is not None:
            part.fidelity = [fidelity(a, b) for a, b in zip(lensed_last, arrays[1], strict=True)]
        parts.append(part)
        del arrays, lensed_last
    check_interrupt()
    return _join(parts)
