"""The CPU kernels' ctypes boundary: several callers at once, and inputs that do not fit the
packed weights (which the C code, reading by the sizes it is given, cannot see)."""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.accel import cpu_gemm
from lazarus_mcp.runtime import worker

pytestmark = pytest.mark.skipif(
    not cpu_gemm.status().available,
    reason=f"CPU kernels unavailable: {cpu_gemm.status().reason}",
)


@pytest.fixture(scope="module")
def packed() -> tuple[cpu_gemm.BF16Weights, cpu_gemm.AffineWeights]:
    w = np.random.default_rng(1).standard_normal((40, 128)).astype(np.float32)

    def pack() -> tuple[cpu_gemm.BF16Weights, cpu_gemm.AffineWeights]:
        q, scales, biases = mx.quantize(mx.array(w), 64, 4)
        return cpu_gemm.pack_bf16(mx.array(w)), cpu_gemm.pack_affine(q, scales, biases, 64, 4)

    return worker.run_sync(pack)


def _bf16(x: np.ndarray, weights: cpu_gemm.BF16Weights, bias: np.ndarray | None) -> np.ndarray:
    def run() -> np.ndarray:
        b = None if bias is None else mx.array(bias)
        return np.array(cpu_gemm.bf16_matmul(mx.array(x), weights, b, 2))

    return worker.run_sync(run)


def _affine(x: np.ndarray, weights: cpu_gemm.AffineWeights, bias: np.ndarray | None) -> np.ndarray:
    def run() -> np.ndarray:
        b = None if bias is None else mx.array(bias)
        return np.array(cpu_gemm.affine_matmul(mx.array(x), weights, b))

    return worker.run_sync(run)


@pytest.mark.parametrize("width", [127, 129, 256])
def test_input_width_must_match_the_weight(
    packed: tuple[cpu_gemm.BF16Weights, cpu_gemm.AffineWeights], width: int
) -> None:
    bf16, affine = packed
    x = np.ones((2, 3, width), dtype=np.float32)
    with pytest.raises(ValueError, match=f"input width {width} does not match .* 128"):
        _bf16(x, bf16, None)
    with pytest.raises(ValueError, match=f"input width {width} does not match .* 128"):
        _affine(x, affine, None)
    rows = np.ones((6, width), dtype=np.float32)
    with pytest.raises(ValueError, match="input width"):
        cpu_gemm.gemm_bf16(rows, bf16, None, 2)
    with pytest.raises(ValueError, match="input width"):
        cpu_gemm.gemm_affine(rows, affine, None)


@pytest.mark.parametrize("length", [39, 41, 1])
def test_bias_must_have_one_value_per_output(
    packed: tuple[cpu_gemm.BF16Weights, cpu_gemm.AffineWeights], length: int
) -> None:
    bf16, affine = packed
    x, bias = np.ones((2, 128), np.float32), np.ones(length, np.float32)
    with pytest.raises(ValueError, match=r"bias: expected float32 of shape \(40,\)"):
        _bf16(x, bf16, bias)
    with pytest.raises(ValueError, match=r"bias: expected float32 of shape \(40,\)"):
        _affine(x, affine, bias)


def test_packed_buffers_must_be_what_the_kernel_reads(
    packed: tuple[cpu_gemm.BF16Weights, cpu_gemm.AffineWeights],
) -> None:
    """The kernels read by n and k alone: a buffer of another dtype or size, or sizes that the
    buffer does not hold, never reach them."""
    bf16, affine = packed
    with pytest.raises(ValueError, match="expected a numpy uint16 buffer, got float32"):
        dataclasses.replace(bf16, packed=bf16.packed.astype(np.float32))
    with pytest.raises(ValueError, match="expected a numpy uint16 buffer, got int16"):
        dataclasses.replace(bf16, packed=bf16.packed.view(np.int16))
    with pytest.raises(ValueError, match="contiguous elements"):
        dataclasses.replace(bf16, n=bf16.n + 32)
    with pytest.raises(ValueError, match="contiguous elements"):
        dataclasses.replace(bf16, k=bf16.k + 2)
    with pytest.raises(ValueError, match="packed affine scales: expected a numpy float32"):
        dataclasses.replace(affine, scales=affine.scales.astype(np.float64))
    with pytest.raises(ValueError, match="packed affine codes"):
        dataclasses.replace(affine, codes=affine.codes[:-1])
    with pytest.raises(ValueError, match="group size 48 must be even and divide"):
        dataclasses.replace(affine, group_size=48)
    # The buffer is checked again at each call: one changed in place since packing is refused.
    object.__setattr__(broken := dataclasses.replace(bf16), "packed", bf16.packed[:-64])
    with pytest.raises(ValueError, match="contiguous elements"):
        cpu_gemm.gemm_bf16(np.ones((1, 128), dtype=np.float32), broken, None, 2)


def test_rows_must_be_float32_in_c_order(
    packed: tuple[cpu_gemm.BF16Weights, cpu_gemm.AffineWeights],
) -> None:
    bf16, _ = packed
    rows = np.ones((4, 128), dtype=np.float32)
    for bad in (rows.astype(np.float64), np.asfortranarray(rows), rows[:, None, :]):
        with pytest.raises(ValueError):
            cpu_gemm.gemm_bf16(bad, bf16, None, 2)
    with pytest.raises(ValueError, match="parts must be 1 or 2"):
        cpu_gemm.gemm_bf16(rows, bf16, None, 3)
    np.testing.assert_array_equal(  # and a right one goes through, as through MLX
        cpu_gemm.gemm_bf16(rows, bf16, None, 2), _bf16(rows, bf16, None)
    )
