"""The logit lens: one forward pass (``taps``), one batched projection of the captured residual
streams through the lens head, and every statistic from that projection.

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens import stats
from lazarus_mcp.lens.head import LensHead, blocks
from lazarus_mcp.lens.taps import forward_with_taps


@dataclass
class LensArrays:
    """Everything the result needs, as numpy arrays, computed by one ``mx.eval``."""

    layers: list[int]
    top_ids: np.ndarray  # [L, k]
    top_probs: np.ndarray  # [L, k]
    entropy: np.ndarray  # [L]
    kl: np.ndarray  # [L]
    final_top_ids: np.ndarray  # [k]
    final_top_probs: np.ndarray  # [k]
    tracked_probs: np.ndarray  # [L, T]
    tracked_ranks: np.ndarray  # [L, T]
    final_tracked_probs: np.ndarray  # [T]
    final_tracked_ranks: np.ndarray  # [T]


def compute_lens(
    model: nn.Module,
    head: LensHead,
    token_ids: list[int],
    layers: list[int],
    top_k: int,
    tracked_ids: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> LensArrays:
    """The lens of each selected block: one projection per block, all statistics from it."""
    captured, final_logits = forward_with_taps(model, token_ids, layers, embedding_factor, windows)
    last = len(blocks(model)) - 1
    final_lp, final_p = stats.softmax_pair(final_logits)
    # Block N-1's lens *is* the model's output; projecting it again would only repeat that work.
    projected = [i for i in layers if i != last]
    rows: dict[int, tuple[mx.array, mx.array]] = {}
    if projected:
        lens_lp, lens_p = stats.softmax_pair(head(mx.stack([captured[i] for i in projected])))
        rows = {i: (lens_lp[n], lens_p[n]) for n, i in enumerate(projected)}
    if last in layers:
        rows[last] = (final_lp, final_p)
    logprobs = mx.stack([rows[i][0] for i in layers])
    probs = mx.stack([rows[i][1] for i in layers])
    top_ids, _ = stats.top_k(logprobs, top_k)
    final_ids, _ = stats.top_k(final_lp[None], top_k)
    tracked = mx.array(tracked_ids or [0], dtype=mx.int32)
    tracked_ranks = stats.ranks(logprobs, tracked)
    final_ranks = stats.ranks(final_lp[None], tracked)
    outputs = [
        top_ids,
        mx.take_along_axis(probs, top_ids, axis=-1),
        stats.entropy(logprobs, probs),
        stats.kl_divergence(final_lp[None], final_p[None], logprobs),
        final_ids[0],
        final_p[final_ids[0]],
        probs[:, tracked],
        tracked_ranks,
        final_p[tracked],
        final_ranks[0],
    ]
    mx.eval(*outputs)
    arrays = [np.array(a) for a in outputs]
    if not tracked_ids:
        for n in (6, 7):
            arrays[n] = arrays[n][:, :0]
        for n in (8, 9):
            arrays[n] = arrays[n][:0]
    return LensArrays(layers, *arrays)
