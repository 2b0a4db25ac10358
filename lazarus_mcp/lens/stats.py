"""Statistics of lens distributions as plain functions over float32 logits of shape [..., V]."""

from __future__ import annotations

import mlx.core as mx


def softmax_pair(logits: mx.array) -> tuple[mx.array, mx.array]:
    """Log-probabilities and probabilities per row, from one pass of exponentials (on MLX's CPU
    backend an exponential over a [L, V] array costs as much as the rest of the statistics)."""
    logits = logits.astype(mx.float32)
    shifted = logits - mx.max(logits, axis=-1, keepdims=True)
    exps = mx.exp(shifted)
    total = mx.sum(exps, axis=-1, keepdims=True)
    return shifted - mx.log(total), exps / total


def entropy(logprobs: mx.array, probs: mx.array) -> mx.array:
    """Shannon entropy in nats, per row."""
    return -mx.sum(probs * logprobs, axis=-1)


def kl_divergence(p_logprobs: mx.array, p_probs: mx.array, q_logprobs: mx.array) -> mx.array:
    """KL(p || q) in nats, per row; p broadcasts over q's rows."""
    return mx.sum(p_probs * (p_logprobs - q_logprobs), axis=-1)


def top_k(logprobs: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """Indices and log-probabilities of the k largest entries per row, best first.

    Partial selection (argpartition) then a sort of only k entries: O(V + k log k) per row.
    """
    part = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., :k]
    values = mx.take_along_axis(logprobs, part, axis=-1)
    order = mx.argsort(-values, axis=-1)
    return mx.take_along_axis(part, order, axis=-1), mx.take_along_axis(values, order, axis=-1)


def ranks(logprobs: mx.array, token_ids: mx.array) -> mx.array:
    """1-based rank of each token per row over the whole vocabulary; ties share the best rank.

    Returns [..., T] for logprobs [..., V] and token_ids [T]. One comparison per token: a
    [..., T, V] boolean array would be T times the size of the log-probs themselves.
    """
    chosen = mx.take(logprobs, token_ids, axis=-1)  # [..., T]
    counts = [mx.sum(logprobs > chosen[..., t : t + 1], axis=-1) for t in range(token_ids.shape[0])]
    return 1 + mx.stack(counts, axis=-1)


def js_divergence(
    p_logprobs: mx.array, p_probs: mx.array, q_logprobs: mx.array, q_probs: mx.array
) -> mx.array:
    """Jensen-Shannon divergence in nats per row: (KL(p||m) + KL(q||m)) / 2 with m = (p + q) / 2.

    Entries a distribution gives probability 0 contribute 0 (not 0 * log 0 = nan)."""
    log_m = mx.log((p_probs + q_probs) / 2)
    kl_p = mx.sum(mx.where(p_probs > 0, p_probs * (p_logprobs - log_m), 0.0), axis=-1)
    kl_q = mx.sum(mx.where(q_probs > 0, q_probs * (q_logprobs - log_m), 0.0), axis=-1)
    return (kl_p + kl_q) / 2
