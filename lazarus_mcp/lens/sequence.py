"""Multi-token answers: the whole string's teacher-forced log-probability at every layer.

A tracked string of several tokens (" 443" is often " 4", "43") is scored as the model would
score it as a continuation: the prompt plus all pieces but the last run in the same single forward
pass as the lens, and each piece's lens log-probability is read at the position before it, then
summed. Several such strings run as rows of one right-padded batch (``subtaps``); row 0 also
carries the prompt's own lens, whose last position the continuation cannot reach (causal).
Runs on the MLX worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens import stats
from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.lens.subtaps import forward_sublayers


@dataclass
class SequenceForward:
    captured: dict[int, mx.array]  # block -> [D] at the prompt's last position
    final_logits: mx.array  # [V]: the model's own output there
    layer_logprobs: mx.array  # [Q, L]: each string's summed log-probability per captured layer
    final_logprobs: mx.array  # [Q]: the same from the model's own output


def forward_with_continuations(
    model: nn.Module,
    head: LensHead,
    token_ids: list[int],
    taps: list[int],
    layers: list[int],
    pieces: list[list[int]],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> SequenceForward:
    """One forward pass of ``token_ids + p[:-1]`` for every ``p`` in ``pieces`` (each of 2+ ids).

    ``taps`` are the blocks whose state at the prompt's last position the caller needs;
    ``layers`` those at which the strings are scored (block N-1: the model's own output).
    """
    start = len(token_ids) - 1
    span = max(len(p) for p in pieces)
    rows = [token_ids + p[:-1] for p in pieces]
    positions = list(range(start, start + span))
    states = forward_sublayers(model, rows, positions, None, embedding_factor, windows)
    last = len(states.left) - 1
    own = states.logits.astype(mx.float32)  # [Q, span, V]
    # Gather, per string, the log-probability of piece j at offset j (padding offsets masked).
    index = mx.array([p + [0] * (span - len(p)) for p in pieces], dtype=mx.int32)  # [Q, span]
    valid = mx.array([[1.0] * len(p) + [0.0] * (span - len(p)) for p in pieces])

    def summed(logits: mx.array) -> mx.array:  # [Q, span, V] -> [Q]
        logprobs, _ = stats.softmax_pair(logits)
        picked = mx.take_along_axis(logprobs, index[..., None], axis=-1)[..., 0]
        return mx.sum(mx.where(valid > 0, picked, 0.0), axis=-1)

    per_layer = [summed(own) if i == last else summed(head(states.left[i])) for i in layers]
    return SequenceForward(
        captured={i: states.left[i][0, 0] for i in taps},
        final_logits=own[0, 0],
        layer_logprobs=mx.stack(per_layer, axis=1),
        final_logprobs=summed(own),
    )
