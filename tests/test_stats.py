"""The statistics against plain numpy definitions."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from lazarus_mcp.lens import stats


def _logits(seed: int = 0, shape: tuple[int, int] = (3, 50)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 3


def _np_logprobs(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_softmax_pair_entropy_kl() -> None:
    logits = _logits()
    lp, probs = stats.softmax_pair(mx.array(logits))
    ref = _np_logprobs(logits)
    np.testing.assert_allclose(np.array(lp), ref, atol=1e-5)
    p = np.exp(ref)
    np.testing.assert_allclose(np.array(probs), p, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.array(stats.entropy(lp, probs)), -(p * ref).sum(-1), atol=1e-5)
    kl = stats.kl_divergence(lp[0:1], probs[0:1], lp)
    np.testing.assert_allclose(np.array(kl), (p[0] * (ref[0] - ref)).sum(-1), atol=1e-5)
    assert float(kl[0]) == 0.0


def test_top_k_is_sorted_and_exact() -> None:
    logits = _logits(1, (4, 1000))
    lp, _ = stats.softmax_pair(mx.array(logits))
    ids, values = stats.top_k(lp, 7)
    expected = np.argsort(-logits, axis=-1)[:, :7]
    np.testing.assert_array_equal(np.array(ids), expected)
    assert np.all(np.diff(np.array(values), axis=-1) <= 0)


def test_ranks_are_one_based_over_whole_vocab_with_ties_sharing_best() -> None:
    logits = np.array([[5.0, 1.0, 3.0, 3.0, -2.0]], dtype=np.float32)
    lp, _ = stats.softmax_pair(mx.array(logits))
    ranks = np.array(stats.ranks(lp, mx.array([0, 2, 3, 4, 1])))
    np.testing.assert_array_equal(ranks, [[1, 2, 2, 5, 4]])


def test_ranks_over_layers_and_positions_match_a_brute_count() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 4, 50)).astype(np.float32)  # [L, P, V]
    logits[1, 2, 7] = logits[1, 2, 9]  # a tie
    tokens = np.array([7, 9, 0])
    ranks = np.array(stats.ranks(mx.array(logits), mx.array(tokens)))
    brute = 1 + (logits[..., None, :] > logits[..., tokens][..., None]).sum(-1)
    np.testing.assert_array_equal(ranks, brute)
    assert ranks.shape == (3, 4, 3)


def test_numpy_statistics_equal_the_mlx_ones() -> None:
    """The grid's numpy statistics (npstats) and the MLX ones agree to float32 rounding."""
    from lazarus_mcp.lens import npstats

    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((3, 2, 200)) * 4).astype(np.float32)
    lp_n, p_n = npstats.softmax_pair(logits)
    lp_m, p_m = stats.softmax_pair(mx.array(logits))
    np.testing.assert_allclose(lp_n, np.array(lp_m), atol=1e-5)
    np.testing.assert_allclose(
        npstats.entropy(lp_n, p_n), np.array(stats.entropy(lp_m, p_m)), atol=1e-5
    )
    kl_n = npstats.kl_divergence(lp_n[:1], p_n[:1], lp_n)
    np.testing.assert_allclose(
        kl_n, np.array(stats.kl_divergence(lp_m[:1], p_m[:1], lp_m)), atol=1e-5
    )
    ids_m, _ = stats.top_k(lp_m, 4)
    np.testing.assert_array_equal(npstats.top_k(lp_n, 4), np.array(ids_m))
    tokens = np.array([3, 150])
    np.testing.assert_array_equal(
        npstats.ranks(lp_n, tokens), np.array(stats.ranks(lp_m, mx.array(tokens)))
    )
