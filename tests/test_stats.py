"""The statistics (``lens/stats.py``, the one module every analysis reads) against plain
float64 definitions."""

from __future__ import annotations

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
    lp, probs = stats.softmax_pair(logits)
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
    lp, _ = stats.softmax_pair(logits)
    ids = stats.top_k(lp, 7)
    expected = np.argsort(-logits, axis=-1)[:, :7]
    np.testing.assert_array_equal(ids, expected)
    assert np.all(np.diff(np.take_along_axis(lp, ids, axis=-1), axis=-1) <= 0)


def test_ranks_are_one_based_over_whole_vocab_with_ties_sharing_best() -> None:
    logits = np.array([[5.0, 1.0, 3.0, 3.0, -2.0]], dtype=np.float32)
    lp, _ = stats.softmax_pair(logits)
    ranks = np.array(stats.ranks(lp, np.array([0, 2, 3, 4, 1])))
    np.testing.assert_array_equal(ranks, [[1, 2, 2, 5, 4]])


def test_ranks_over_layers_and_positions_match_a_brute_count() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 4, 50)).astype(np.float32)  # [L, P, V]
    logits[1, 2, 7] = logits[1, 2, 9]  # a tie
    tokens = np.array([7, 9, 0])
    ranks = np.array(stats.ranks(logits, tokens))
    brute = 1 + (logits[..., None, :] > logits[..., tokens][..., None]).sum(-1)
    np.testing.assert_array_equal(ranks, brute)
    assert ranks.shape == (3, 4, 3)


def test_js_divergence_is_symmetric_and_zero_on_itself() -> None:
    lp, p = stats.softmax_pair(_logits(6, (4, 60)))
    js = stats.js_divergence(lp[:2], p[:2], lp[2:], p[2:])
    np.testing.assert_allclose(js, stats.js_divergence(lp[2:], p[2:], lp[:2], p[:2]), atol=1e-7)
    assert np.all(js > 0) and np.all(js <= np.log(2) + 1e-6)
    np.testing.assert_allclose(stats.js_divergence(lp, p, lp, p), 0.0, atol=1e-6)


def test_rank_of_picked_and_sequence_logprob() -> None:
    logits = np.array([[5.0, 1.0, 3.0], [0.0, 2.0, 1.0]], dtype=np.float32)
    lp, _ = stats.softmax_pair(logits)
    np.testing.assert_array_equal(stats.rank_of(lp, np.array([2, 0])), [2, 3])
    np.testing.assert_array_equal(stats.picked(lp, np.array([2, 0])), [lp[0, 2], lp[1, 0]])
    total = stats.sequence_logprob(lp, np.array([True, False, True]))
    np.testing.assert_allclose(total, lp[:, 0] + lp[:, 2])
