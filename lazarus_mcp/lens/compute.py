"""The logit lens: one forward pass (``taps``), one batched projection of the captured residual
streams through the lens head, and every statistic from that projection.

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens import stats
from lazarus_mcp.lens.fidelity import fidelity_arrays, fidelity_of
from lazarus_mcp.lens.head import LensHead, blocks
from lazarus_mcp.lens.sequence import forward_with_continuations
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.schema.fidelity import Fidelity


@dataclass
class LensArrays:
    """Everything the result needs, as numpy arrays, computed by one ``mx.eval``."""

    layers: list[int | None]  # None: the embedding output (the grid path)
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
    final_top_ranks: np.ndarray  # [L]: rank of the final top-1 token per layer (milestones)
    fidelity: Fidelity  # the lens of block N-1, projected, against the model's own output
    sequence_logprobs: np.ndarray | None = None  # [Q, L]: multi-token strings, per layer
    final_sequence_logprobs: np.ndarray | None = None  # [Q]


def compute_lens(
    model: nn.Module,
    head: LensHead,
    token_ids: list[int],
    layers: list[int],
    top_k: int,
    tracked_ids: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
    continuations: list[list[int]] | None = None,
) -> LensArrays:
    """The lens of each selected block: one projection per block, all statistics from it.

    ``continuations``: multi-token strings (their pieces' ids), scored in the same pass."""
    last = len(blocks(model)) - 1
    taps = sorted({*layers, last})
    sequences = None
    if continuations:
        sequences = forward_with_continuations(
            model, head, token_ids, taps, layers, continuations, embedding_factor, windows
        )
        captured, final_logits = sequences.captured, sequences.final_logits
    else:
        captured, final_logits = forward_with_taps(
            model, token_ids, taps, embedding_factor, windows
        )
    final_lp, final_p = stats.softmax_pair(final_logits)
    # Block N-1's row is the model's own output; its projection through the lens head serves
    # only to check that head against that output (fidelity, below).
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
        stats.ranks(logprobs, final_ids[0][:1])[:, 0],
        *fidelity_arrays(head(captured[last][None])[0], final_logits),
    ]
    if sequences is not None:
        outputs += [sequences.layer_logprobs, sequences.final_logprobs]
    mx.eval(*outputs)
    arrays = [np.array(a) for a in outputs]
    if not tracked_ids:
        for n in (6, 7):
            arrays[n] = arrays[n][:, :0]
        for n in (8, 9):
            arrays[n] = arrays[n][:0]
    fields: tuple[Any, ...] = (layers, *arrays[:11], fidelity_of(outputs[11:14]), *arrays[14:])
    return LensArrays(*fields)
