"""Lens statistics of any stack of residual vectors: the same numbers ``compute.py`` gives for
block outputs, for the states the other lenses read (after an attention sub-layer, another run).

Plain functions over MLX arrays; nothing is evaluated here, so callers evaluate everything at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from lazarus_mcp.lens import stats
from lazarus_mcp.lens.tokens import TokenText
from lazarus_mcp.schema.attribution import TrackedProbability


@dataclass
class RowStats:
    """Per row [L, ...] as numpy, after one ``mx.eval``."""

    top_ids: np.ndarray  # [L, k]
    top_probs: np.ndarray  # [L, k]
    entropy: np.ndarray  # [L]
    kl: np.ndarray  # [L]: KL(final || row)
    tracked_probs: np.ndarray  # [L, T]
    tracked_ranks: np.ndarray  # [L, T]
    final_top_ranks: np.ndarray  # [L]: rank of the final top-1 token in each row

    def tracked(self, text: TokenText, ids: list[int], row: int) -> list[TrackedProbability]:
        """The tracked tokens' probability and rank in one row."""
        return [
            TrackedProbability(
                token=text(t),
                token_id=t,
                probability=float(self.tracked_probs[row, n]),
                rank=int(self.tracked_ranks[row, n]),
            )
            for n, t in enumerate(ids)
        ]


def row_arrays(
    logprobs: mx.array,
    probs: mx.array,
    final_lp: mx.array,
    final_p: mx.array,
    top_k: int,
    tracked_ids: list[int],
) -> list[mx.array]:
    """The unevaluated arrays behind :class:`RowStats` for rows [L, V] against a final [V]."""
    top_ids, _ = stats.top_k(logprobs, top_k)
    final_top = mx.argmax(final_lp).reshape(1)
    tracked = mx.array(tracked_ids or [0], dtype=mx.int32)
    return [
        top_ids,
        mx.take_along_axis(probs, top_ids, axis=-1),
        stats.entropy(logprobs, probs),
        stats.kl_divergence(final_lp[None], final_p[None], logprobs),
        probs[:, tracked],
        stats.ranks(logprobs, tracked),
        stats.ranks(logprobs, final_top)[:, 0],
    ]


def row_stats(evaluated: list[mx.array], num_tracked: int) -> RowStats:
    arrays = [np.array(a) for a in evaluated]
    arrays[4] = arrays[4][:, :num_tracked]
    arrays[5] = arrays[5][:, :num_tracked]
    return RowStats(*arrays)
