"""The fused statistics kernel (``accel/csrc/_cell_stats.c``) against numpy's reference
(``lens/stats.py`` through ``cells.reference_statistics``): probabilities within 1e-6,
entropy, KL and log-probabilities within 1e-5, the same top-k ids and ranks, on random and
adversarial rows, by the AVX-512 passes and by the scalar loop."""

from __future__ import annotations

import numpy as np
import pytest

from lazarus_mcp.accel import cell_stats as fused
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.cells import Cells, fused_statistics, reference_statistics

pytestmark = pytest.mark.skipif(not fused.available(), reason=fused.status().reason)

SIMD = [pytest.param(True, id="avx512"), pytest.param(False, id="scalar")]


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at the exact value (subnormals included)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


@pytest.mark.parametrize("simd", SIMD)
def test_exp_is_within_two_ulps_of_float64_on_millions_of_values(simd: bool) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-87.3, 0.0, 3_000_000),  # every normal result a softmax gives
            rng.uniform(-1e-3, 1e-3, 200_000),  # around 1
            -np.arange(0, 87, 2**-8),  # a fine grid
        ]
    ).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    ulps = _ulps(fused.exp(x, simd=simd), exact)
    assert ulps.max() <= 2.0, ulps.max()
    assert np.mean(ulps > 1.0) < 1e-3  # almost all within one ulp
    # numpy's own float32 exp, for scale: the kernel is no worse
    assert ulps.max() <= max(2.0, _ulps(np.exp(x), exact).max())


@pytest.mark.parametrize("simd", SIMD)
def test_exp_subnormals_underflow_and_zero(simd: bool) -> None:
    x = np.array([0.0, -87.5, -100.0, -103.9, -104.0, -120.0, -1e30, 88.0], np.float32)
    got = fused.exp(x, simd=simd)
    exact = np.exp(x.astype(np.float64)).astype(np.float32)  # rounded once: subnormals too
    np.testing.assert_allclose(got[:4], exact[:4], rtol=2e-7 if x[0] == 0 else 0, atol=2e-45)
    assert got[0] == 1.0 and np.all(got[5:7] == 0.0)
    np.testing.assert_allclose(got[7], exact[7], rtol=3e-7)


def _assert_agree(got: Cells, ref: Cells) -> None:
    for name in ("top_ids", "final_top_ids", "tracked_ranks", "final_top_ranks"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(got.final_tracked_ranks, ref.final_tracked_ranks)
    for name in ("top_probs", "final_top_probs", "tracked_probs", "final_tracked_probs"):
        np.testing.assert_allclose(
            getattr(got, name), getattr(ref, name), rtol=0, atol=1e-6, err_msg=name
        )
    for name in ("entropy", "kl", "picked", "final_picked"):
        a, b = getattr(got, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:  # rtol: a KL of 1e6 (the huge-range rows) is 1 float32 ulp from it
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5, err_msg=name)
    assert got.rows == ref.rows


def _both(
    logits: np.ndarray,
    own: np.ndarray,
    top_k: int,
    tracked: list[int],
    picks: np.ndarray | None,
    simd: bool,
) -> tuple[Cells, Cells]:
    rows = list(range(logits.shape[0]))
    got = fused_statistics(logits, own, rows, top_k, tracked, picks, simd=simd)
    ref = reference_statistics(logits, own, rows, top_k, tracked, picks)
    return got, ref


def _random(seed: int, rows: int, cells: int, vocab: int, scale: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cells, vocab)) * scale).astype(np.float32)


@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.parametrize("vocab", [1, 2, 15, 16, 17, 1000, 49_152])
def test_random_rows_agree_with_numpy(simd: bool, vocab: int) -> None:
    logits = _random(vocab, 4, 3, vocab)
    logits[-1] = logits[-1] * 2  # the model's own row among them, as cells.row_logits stacks it
    own = logits[-1]
    rng = np.random.default_rng(1)
    tracked = [0, vocab - 1, vocab // 2, 0]  # a duplicate too
    picks = rng.integers(0, vocab, 3)
    for top_k in sorted({1, min(5, vocab), vocab}):
        got, ref = _both(logits, own, top_k, tracked, picks, simd)
        _assert_agree(got, ref)
    np.testing.assert_array_equal(got.kl[-1], 0.0)  # the model's own row against itself


@pytest.mark.parametrize("simd", SIMD)
def test_ties_take_the_lower_index_first(simd: bool) -> None:
    rng = np.random.default_rng(2)
    logits = rng.integers(-3, 3, size=(3, 4, 300)).astype(np.float32)  # many equal logits
    logits[:, 1] = 1.0  # a whole row tied
    own = rng.integers(-2, 2, size=(4, 300)).astype(np.float32)
    for top_k in (1, 7, 150, 300):
        got, ref = _both(logits, own, top_k, [0, 5, 299], None, simd)
        _assert_agree(got, ref)
    np.testing.assert_array_equal(got.top_ids[0, 1], np.arange(300))
    np.testing.assert_array_equal(got.tracked_ranks[0, 1], [1, 1, 1])
    # the expected order written out: value descending, then index ascending
    row = logits[2, 3]
    expected = sorted(range(300), key=lambda i: (-row[i], i))[:7]
    got7, _ = _both(logits, own, 7, [], None, simd)
    np.testing.assert_array_equal(got7.top_ids[2, 3], expected)


@pytest.mark.parametrize("simd", SIMD)
def test_ascending_rows_fill_the_heap_at_every_entry(simd: bool) -> None:
    """The threshold scan's worst case: each entry beats every one before it."""
    logits = np.broadcast_to(np.linspace(-5, 5, 5000, dtype=np.float32), (2, 2, 5000)).copy()
    logits[1, 1] = logits[1, 1, ::-1]
    got, ref = _both(logits, logits[0], 64, [0, 4999], None, simd)
    _assert_agree(got, ref)
    np.testing.assert_array_equal(got.top_ids[0, 0, :3], [4999, 4998, 4997])


@pytest.mark.parametrize("simd", SIMD)
def test_huge_ranges_and_one_dominant_logit(simd: bool) -> None:
    logits = _random(3, 3, 2, 4096)
    logits[0, 0, 17] = 1e30
    logits[0, 0, 18] = -1e30
    logits[1, 1, :] = np.linspace(-1e6, 1e6, 4096, dtype=np.float32)
    logits[2, 0, 99] = 80.0  # p ~ 1 - 1e-33
    own = logits[2]
    got, ref = _both(logits, own, 5, [17, 18, 99], np.array([18, 4095]), simd)
    _assert_agree(got, ref)
    assert got.top_ids[0, 0, 0] == 17 and got.top_probs[0, 0, 0] == 1.0


@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on non-finite rows
@pytest.mark.parametrize("bad", [-np.inf, np.inf, np.nan])
def test_non_finite_cells_are_the_reference_s_and_the_others_untouched(
    simd: bool, bad: float
) -> None:
    logits = _random(4, 3, 4, 500)
    own = logits[-1].copy()
    logits[0, 1, 7] = bad  # a projected row of cell 1
    own[3, 9] = bad  # the model's own row of cell 3
    picks = np.array([1, 2, 3, 4])
    got, ref = _both(logits, own, 5, [7, 9], picks, simd)
    with np.errstate(invalid="ignore"):
        for field in ("top_ids", "tracked_ranks", "final_top_ids"):
            np.testing.assert_array_equal(getattr(got, field), getattr(ref, field))
        for field in ("entropy", "kl", "tracked_probs", "picked", "final_tracked_probs"):
            a, b = getattr(got, field), getattr(ref, field)
            bad_cells = np.array([False, True, False, True])
            cell_axis = 1 if a.ndim >= 2 and a.shape[0] == 3 else 0
            index = (slice(None), bad_cells) if cell_axis else (bad_cells,)
            np.testing.assert_array_equal(a[index], b[index])  # the reference's own numbers
            index = (slice(None), ~bad_cells) if cell_axis else (~bad_cells,)
            np.testing.assert_allclose(a[index], b[index], atol=1e-5)


def test_a_row_is_the_same_whatever_rows_share_its_call() -> None:
    """Bitwise: a cell computed alone, in a chunk, or in another order of cells."""
    logits = _random(5, 6, 9, 3000)
    own = logits[-1]
    rows = list(range(6))
    whole = fused_statistics(logits, own, rows, 5, [3, 4], None)
    for j in (0, 4, 8):
        alone = fused_statistics(logits[:, j : j + 1], own[j : j + 1], rows, 5, [3, 4], None)
        for name in ("top_ids", "top_probs", "entropy", "kl", "tracked_probs", "tracked_ranks"):
            np.testing.assert_array_equal(getattr(alone, name)[:, 0], getattr(whole, name)[:, j])


def test_reference_top_k_is_deterministic_under_ties() -> None:
    scores = np.zeros((2, 50), np.float32)
    scores[0, [3, 30]] = 2.0
    for k in (1, 2, 5, 50):
        ids = stats.top_k(scores, k)
        expected = sorted(range(50), key=lambda i: (-scores[0, i], i))[:k]
        np.testing.assert_array_equal(ids[0], expected)
        np.testing.assert_array_equal(ids[1], np.arange(k))
    with_nan = np.array([[np.nan, 1.0, np.nan, 0.5]], np.float32)
    np.testing.assert_array_equal(stats.top_k(with_nan, 3), [[1, 3, 0]])


def test_bad_calls_are_refused_before_the_kernel() -> None:
    x = np.zeros((2, 10), np.float32)
    with pytest.raises(ValueError, match="ids must be between"):
        fused.row_stats(x, 1, np.array([[10], [0]]))
    with pytest.raises(ValueError, match="top_k"):
        fused.row_stats(x, 11, np.zeros((2, 0)))
    with pytest.raises(ValueError, match="rows"):
        fused.row_stats(x, 1, np.zeros((3, 1)))
    plain = fused.row_stats(x, 1, np.zeros((2, 0)))
    with pytest.raises(ValueError, match="probabilities"):
        fused.row_stats(x, 1, np.zeros((2, 0)), fused.Reference(x, plain, np.zeros(2)))


@pytest.mark.parametrize("mix", [0.0, 0.5])
def test_fidelity_read_in_the_lens_projection_equals_its_own_pass(mix: float) -> None:
    """``CellSpec(fidelity=True)`` (generate's steps) reads block N-1's lens row in the same
    projection as the other rows: the same fidelity as ``fidelities``' own projection, and the
    same statistics as without it, on a real checkpoint (a translator lens that moves block
    N-1, so the check has something to measure, and the logit lens)."""
    import mlx.core as mx

    from lazarus_mcp.lens.cells import CellSpec, cell_stats
    from lazarus_mcp.lens.fidelity import fidelities
    from lazarus_mcp.lens.readout import LogitLens
    from lazarus_mcp.lens.taps import tapped_forward
    from lazarus_mcp.modeling.loading import load
    from lazarus_mcp.runtime import worker
    from tests.conftest import PARITY
    from tests.test_engine import _Translator

    def run() -> None:
        loaded = load(str(PARITY / "llama"))
        width = loaded.info.hidden_size
        lens = _Translator(loaded.head, mix, width) if mix else LogitLens(loaded.head)
        last = loaded.info.num_layers - 1
        ids = loaded.tokenizer.encode("The capital of France is")
        positions = mx.array([[[p] for p in range(len(ids))]])
        tapped = tapped_forward(loaded.model, mx.array([ids]), positions, outputs=range(last + 1))
        hidden = {i: h[0] for i, h in tapped.outputs.items()}
        own = tapped.logits[0]
        rows = [0, 1, last]
        plain = cell_stats(CellSpec(lens, rows, last, 5, [7]), hidden, own)
        checked = cell_stats(CellSpec(lens, rows, last, 5, [7], fidelity=True), hidden, own)
        assert plain.fidelity is None and checked.fidelity is not None
        for got, want in zip(
            checked.fidelity, fidelities(lens, last, hidden[last], own), strict=True
        ):
            assert got.top1_agrees == want.top1_agrees
            assert abs(got.max_abs_prob_diff - want.max_abs_prob_diff) <= 1e-6
            assert abs(got.kl_divergence - want.kl_divergence) <= 1e-6
        if mix:
            assert max(f.max_abs_prob_diff for f in checked.fidelity) > 1e-4
        np.testing.assert_array_equal(checked.top_ids, plain.top_ids)
        np.testing.assert_allclose(checked.top_probs, plain.top_probs, atol=1e-6)
        np.testing.assert_allclose(checked.kl, plain.kl, atol=1e-5)

    worker.run_sync(run)
