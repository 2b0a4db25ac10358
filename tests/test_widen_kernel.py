"""The widened float32 GEMM on packed bfloat16 weights (``csrc/_widen_gemm.c``) and the
dispatch by shape that sends many-row float32-accurate matmuls to it (``accel/dispatch.py``)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.accel import cpu_gemm, dispatch
from lazarus_mcp.runtime import worker
from tests.test_bf16_kernel import _bf16_bits, _widen

pytestmark = pytest.mark.skipif(
    not cpu_gemm.status().available,
    reason=f"bfloat16 kernel unavailable: {cpu_gemm.status().reason}",
)


def _packed(w_bits: np.ndarray) -> cpu_gemm.BF16Weights:
    return worker.run_sync(lambda: cpu_gemm.pack_bf16(mx.array(w_bits).view(mx.bfloat16)))


def _reference(x: np.ndarray, w_bits: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    ref = x.astype(np.float64) @ _widen(w_bits).astype(np.float64).T
    return ref if bias is None else ref + bias


@pytest.mark.parametrize("m", [1, 11, 12, 13, 25, 200])
@pytest.mark.parametrize(("k", "n"), [(1, 1), (2, 31), (3, 32), (33, 33), (64, 70), (301, 129)])
def test_widened_equals_float64_reference(m: int, k: int, n: int) -> None:
    """Every row (tiles of 12 and their tails), tail column and odd input, in float32: to float32
    rounding of the sums, and closer than the split kernel's 16-bit inputs."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    x = rng.standard_normal((m, k)).astype(np.float32) * 3
    w_bits = _bf16_bits(rng.standard_normal((n, k)).astype(np.float32) / np.sqrt(k))
    bias = rng.standard_normal(n).astype(np.float32) if n % 2 else None
    weights = _packed(w_bits)
    got = cpu_gemm.gemm_widened(x, weights, bias)
    ref = _reference(x, w_bits, bias)
    magnitude = np.abs(x).astype(np.float64) @ np.abs(_widen(w_bits)).T + 1
    assert got.shape == (m, n)
    assert np.all(np.abs(got - ref) <= 2**-21 * np.sqrt(k) * magnitude)
    split = cpu_gemm.gemm_bf16(x, weights, bias, 2)
    assert np.abs(got - ref).max() <= np.abs(split - ref).max() + 1e-7


def test_widened_rows_do_not_depend_on_the_other_rows() -> None:
    rng = np.random.default_rng(5)
    w_bits = _bf16_bits(rng.standard_normal((96, 200)).astype(np.float32))
    x = rng.standard_normal((61, 200)).astype(np.float32)
    weights = _packed(w_bits)
    whole = cpu_gemm.gemm_widened(x, weights, None)
    for row in (0, 11, 12, 60):
        alone = cpu_gemm.gemm_widened(x[row : row + 1], weights, None)[0]
        np.testing.assert_array_equal(alone, whole[row])


def test_exact_matmul_dispatches_by_rows() -> None:
    """parts=2 (``--dtype auto``) runs the split kernel below WIDE_ROWS rows and the widened one
    from there on, and both agree to float32 rounding."""
    rng = np.random.default_rng(6)
    w_bits = _bf16_bits(rng.standard_normal((70, 64)).astype(np.float32) / 8)
    weights = _packed(w_bits)
    assert dispatch.exact_kernel(dispatch.WIDE_ROWS - 1) == dispatch.SPLIT
    assert dispatch.exact_kernel(dispatch.WIDE_ROWS) == dispatch.WIDENED
    for m in (1, dispatch.WIDE_ROWS - 1, dispatch.WIDE_ROWS, 3 * dispatch.WIDE_ROWS):
        x = rng.standard_normal((m, 64)).astype(np.float32)

        def run(x: np.ndarray = x) -> np.ndarray:
            return np.array(cpu_gemm.bf16_matmul(mx.array(x), weights, None, 2))

        got = worker.run_sync(run)
        if m < dispatch.WIDE_ROWS:
            expected = cpu_gemm.gemm_bf16(x, weights, None, 2)
        else:
            expected = cpu_gemm.gemm_widened(x, weights, None)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_allclose(got, _reference(x, w_bits, None), rtol=0, atol=1e-4)


def test_widened_checks_its_inputs() -> None:
    weights = _packed(_bf16_bits(np.ones((40, 128), np.float32)))
    with pytest.raises(ValueError, match="width"):
        cpu_gemm.gemm_widened(np.ones((3, 127), np.float32), weights, None)
    with pytest.raises(ValueError, match="bias"):
        cpu_gemm.gemm_widened(np.ones((3, 128), np.float32), weights, np.ones(39, np.float32))
    assert cpu_gemm.gemm_widened(np.ones((0, 128), np.float32), weights, None).shape == (0, 40)
