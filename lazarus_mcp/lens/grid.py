"""The lens at many positions: every statistic of every (row, position) cell, in chunks.

A full [rows, positions, vocab] float32 array is never built. Positions are taken a chunk at a
time, as many as keep one [rows, chunk, V] array under ``CHUNK_BYTES`` (at least one position);
each chunk's head projection is evaluated in MLX, its statistics computed in numpy (``npstats``:
the CPU exponential there is ~12x MLX's), and dropped before the next chunk; the model's logits
are gathered a chunk at a time too. A chunk's working set is about a dozen [rows, chunk, V]
arrays (logits, log-probs, probs, exponentials, products in the entropy and KL sums, one
comparison per tracked token at a time), so the peak is

    P * V * 4 bytes (the model's own logits at the P positions, which its forward returns at once)
    + about 12 * max(CHUNK_BYTES, rows * V * 4)

whatever the prompt length. Measured (``python examples/grid_memory.py``): vocab 262,144, the
embedding row and 4 blocks, 1,000 positions: MLX's peak 1.08 GB above the weights, of which
1.05 GB are the model's logits; Python and numpy's peak 0.23 GB (the statistics and the result
objects); the process's peak RSS grew by 1.43 GB. One [rows, P, V] float32 array alone would be
5.2 GB. (Gathering the logits all at once, as a first version did, copied them: 2.51 GB.)

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.lens import npstats
from lazarus_mcp.lens.compute import LensArrays
from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.schema.fidelity import Fidelity

CHUNK_BYTES = 32 << 20


def chunk_positions(num_rows: int, vocab: int, chunk_bytes: int | None = None) -> int:
    """How many positions one chunk takes: [num_rows, chunk, vocab] float32 under the budget."""
    budget = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    return max(1, budget // (4 * vocab * max(1, num_rows)))


def _final_top_ranks(logprobs: np.ndarray, final_ids: np.ndarray) -> np.ndarray:
    """[L, Pc]: the rank, in each row, of the model's own top-1 token at that position."""
    top1 = np.broadcast_to(final_ids[None, :, :1], (*logprobs.shape[:2], 1))
    chosen = np.take_along_axis(logprobs, top1, axis=-1)
    return 1 + (logprobs > chosen).sum(axis=-1)


@dataclass(frozen=True)
class _Cells:
    """What every chunk of a grid shares: the head, the rows and the statistics asked for."""

    head: LensHead
    rows: list[int | None]
    last: int
    top_k: int
    tracked: np.ndarray

    def chunk(self, hidden: dict[int | None, mx.array], final_logits: mx.array) -> list[np.ndarray]:
        """Every statistic for one chunk of positions: hidden [Pc, D] per row, final [Pc, V].

        MLX projects (one head GEMM for every row but the last block, whose lens *is* the
        model's output); numpy computes the statistics (``npstats``)."""
        rows, last, tracked = self.rows, self.last, self.tracked
        projected = [r for r in rows if r != last]
        pending = [final_logits.astype(mx.float32)]
        if projected:
            stacked = mx.stack([hidden[r] for r in projected])  # [Lp, Pc, D]
            flat = stacked.reshape(-1, stacked.shape[-1])
            pending.append(self.head(flat).reshape(*stacked.shape[:2], -1))
        mx.eval(*pending)
        final = np.array(pending[0])  # [Pc, V]
        lens = np.array(pending[1]) if projected else None
        final_lp, final_p = npstats.softmax_pair(final)
        by_row = {r: n for n, r in enumerate(projected)}
        logits = np.stack([final if r == last else lens[by_row[r]] for r in rows])  # type: ignore[index]
        logprobs, probs = npstats.softmax_pair(logits)  # [L, Pc, V]
        top_ids = npstats.top_k(logprobs, self.top_k)
        final_ids = npstats.top_k(final_lp, self.top_k)  # [Pc, k]
        return [
            top_ids,
            np.take_along_axis(probs, top_ids, axis=-1),
            npstats.entropy(logprobs, probs),
            npstats.kl_divergence(final_lp[None], final_p[None], logprobs),
            final_ids,
            np.take_along_axis(final_p, final_ids, axis=-1),
            probs[..., tracked],
            npstats.ranks(logprobs, tracked),
            final_p[..., tracked],
            npstats.ranks(final_lp, tracked),
            _final_top_ranks(logprobs, final_ids),
        ]


def lens_grid(
    head: LensHead,
    rows: list[int | None],
    hidden: dict[int | None, mx.array],
    final_logits: mx.array,
    last: int,
    top_k: int,
    tracked_ids: list[int],
    fidelities: list[Fidelity],
    final_rows: mx.array | None = None,
) -> list[LensArrays]:
    """The lens at each of P positions, one :class:`LensArrays` per position.

    ``rows``: None (the embedding output) and blocks, in display order; ``hidden`` maps each
    row but ``last`` to [P, D]; ``final_logits`` [P, V] is the model's own output, or, with
    ``final_rows`` [P], the rows of ``final_logits`` to read, gathered a chunk at a time (a
    gather of them all would copy the largest array there is). ``fidelities``: per position,
    the fidelity of its prompt (measured at the prompt's last position).
    """
    vocab = final_logits.shape[-1]
    num_positions = final_logits.shape[0] if final_rows is None else final_rows.shape[0]
    cells = _Cells(head, rows, last, top_k, np.array(tracked_ids or [0], dtype=np.int64))
    step = chunk_positions(len(rows), vocab)
    parts: list[list[np.ndarray]] = []
    for start in range(0, num_positions, step):
        window = slice(start, start + step)
        chunk_hidden = {r: h[window] for r, h in hidden.items() if r != last}
        final = final_logits[window] if final_rows is None else final_logits[final_rows[window]]
        parts.append(cells.chunk(chunk_hidden, final))
    # Row-major arrays ([L, P, ...]) join along positions; final ones ([P, ...]) along axis 0.
    axes = (1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1)
    joined = [np.concatenate([p[n] for p in parts], axis=a) for n, a in enumerate(axes)]
    if not tracked_ids:
        for n in (6, 7, 8, 9):
            joined[n] = joined[n][..., :0]
    lenses = []
    for j in range(num_positions):
        column = [a[:, j] if axis == 1 else a[j] for a, axis in zip(joined, axes, strict=True)]
        fields: tuple[Any, ...] = (rows, *column, fidelities[j])
        lenses.append(LensArrays(*fields))
    return lenses
