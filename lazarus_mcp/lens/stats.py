"""The lens statistics, each defined once, as plain functions over float32 numpy arrays [..., V].

These are the definitions. Where the fused C kernel is built (x86-64 Linux:
``accel/csrc/_cell_stats.c``, called by ``cells.fused_statistics``) it computes the cell
statistics instead, 16x faster on the benchmark's grid (0.23 s against 3.7 s), and is tested
against these functions (``tests/test_cell_stats.py``: probabilities within 1e-6, entropy, KL
and log-probabilities within 1e-5, the same top-k ids and ranks); elsewhere (macOS, no C
compiler) and for rows with a non-finite logit, ``cells.reference_statistics`` computes them
here. numpy rather than MLX: on the CPU numpy's vectorized exponential is about 12x MLX's
(231 x 32,000 logits: 0.028 s against 0.331 s, measured on this project's 2-core machine).
Top-k and ranks are given the logits themselves, not log-probabilities: those round
(x - max) - log(sum) and can merge neighbours that the logits keep apart.
"""

from __future__ import annotations

import numpy as np


def softmax_pair(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and probabilities per row, from one pass of exponentials."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    total = exps.sum(axis=-1, keepdims=True)
    return shifted - np.log(total), exps / total


def entropy(logprobs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats, per row."""
    return -(probs * logprobs).sum(axis=-1)


def kl_divergence(
    p_logprobs: np.ndarray, p_probs: np.ndarray, q_logprobs: np.ndarray
) -> np.ndarray:
    """KL(p || q) in nats, per row; p broadcasts over q's rows."""
    return (p_probs * (p_logprobs - q_logprobs)).sum(axis=-1)


def js_divergence(
    p_logprobs: np.ndarray, p_probs: np.ndarray, q_logprobs: np.ndarray, q_probs: np.ndarray
) -> np.ndarray:
    """Jensen-Shannon divergence in nats per row: (KL(p||m) + KL(q||m)) / 2 with m = (p + q) / 2.

    Entries a distribution gives probability 0 contribute 0 (not 0 * log 0 = nan)."""
    with np.errstate(divide="ignore"):
        log_m = np.log((p_probs + q_probs) / 2)
    kl_p = np.where(p_probs > 0, p_probs * (p_logprobs - log_m), 0.0).sum(axis=-1)
    kl_q = np.where(q_probs > 0, q_probs * (q_logprobs - log_m), 0.0).sum(axis=-1)
    return (kl_p + kl_q) / 2


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries per row, best first, equal entries by the lower index
    (a partial selection, then only the k sorted; NaN ranks below every number).

    ``argpartition`` alone leaves which of several entries equal to the k-th best it keeps to
    its algorithm; rows where such a tie straddles the cut take the lowest indices instead."""
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    kth = np.take_along_axis(scores, part, axis=-1).min(axis=-1, keepdims=True)
    straddles = (scores >= kth).sum(axis=-1) > k
    if straddles.any():
        above = scores[straddles] > kth[straddles]
        tied = scores[straddles] == kth[straddles]
        need = k - above.sum(axis=-1, keepdims=True)
        keep = above | (tied & (np.cumsum(tied, axis=-1) <= need))
        part[straddles] = np.nonzero(keep)[-1].reshape(-1, k)
    part = np.sort(part, axis=-1)
    values = np.take_along_axis(scores, part, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def ranks(scores: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """1-based rank of each token per row over the whole vocabulary; ties share the best rank.
    [..., T] for scores [..., V]; one [..., V] comparison per token at a time."""
    chosen = np.take(scores, token_ids, axis=-1)
    counts = [(scores > chosen[..., t : t + 1]).sum(axis=-1) for t in range(len(token_ids))]
    return 1 + np.stack(counts, axis=-1) if counts else np.zeros((*scores.shape[:-1], 0), int)


def rank_of(scores: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """1-based rank of one token per row (``token_ids`` [...], broadcast against the rows)."""
    ids = np.broadcast_to(token_ids, scores.shape[:-1])[..., None]
    chosen = np.take_along_axis(scores, ids, axis=-1)
    return 1 + (scores > chosen).sum(axis=-1)


def picked(logprobs: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """The log-probability of one token per row (``token_ids`` [...], broadcast)."""
    ids = np.broadcast_to(token_ids, logprobs.shape[:-1])[..., None]
    return np.take_along_axis(logprobs, ids, axis=-1)[..., 0]


def sequence_logprob(piece_logprobs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A string's teacher-forced log-probability: its pieces' log-probabilities [..., S] summed
    where ``valid`` [S] (broadcast) marks a piece (padding offsets excluded)."""
    return np.where(valid, piece_logprobs, 0.0).sum(axis=-1)
