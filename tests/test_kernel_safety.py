"""The CPU kernels' ctypes boundary: several callers at once, and inputs that do not fit the
packed weights (which the C code, reading by the sizes it is given, cannot see)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.accel import cpu_gemm
from lazarus_mcp.runtime import worker

pytestmark = pytest.mark.skipif(
    not cpu_gemm.status().available,
    reason=f"CPU kernels unavailable: {cpu_gemm.status().reason}",
)

# Several Python threads (ctypes releases the GIL) multiply at once, each on inputs of its own,
# through both kernels, with packing going on beside them; every result must equal the one
# computed alone. Four threads per call, whatever the machine, so the helper threads take part.
# Sharing the helpers' one work slot, this lost jobs (uninitialized rows) or hung for good.
_CONCURRENT_SCRIPT = """
import sys, threading
import mlx.core as mx
import numpy as np
from lazarus_mcp.accel import cpu_gemm

cpu_gemm._threads = lambda: 4
rng = np.random.default_rng(0)
m, k, n = 8, 256, 320  # above the kernels' threshold for using threads
w = mx.array(rng.standard_normal((n, k)).astype(np.float32))
bf16 = cpu_gemm.pack_bf16(w)
affine = cpu_gemm.pack_affine(*mx.quantize(w, 64, 4), 64, 4)
bias = rng.standard_normal(n).astype(np.float32)
xs = [rng.standard_normal((m, k)).astype(np.float32) for _ in range(8)]
calls = [
    lambda x: cpu_gemm.gemm_bf16(x, bf16, bias, 2),
    lambda x: cpu_gemm.gemm_bf16(x, bf16, None, 1),
    lambda x: cpu_gemm.gemm_affine(x, affine, bias),
]
expected = [[call(x) for x in xs] for call in calls]
wrong = []

def hammer(t):
    for i in range(150):
        c, j = (i + t) % len(calls), (i * 3 + t) % len(xs)
        if not np.array_equal(calls[c](xs[j]), expected[c][j]):
            wrong.append((t, i))

def repack():
    for _ in range(20):
        again = cpu_gemm.pack_bf16(w)
        if not np.array_equal(again.packed, bf16.packed):
            wrong.append(("pack",))

threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
threads.append(threading.Thread(target=repack))
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(len(wrong), "wrong results")
sys.exit(1 if wrong else 0)
"""


def test_concurrent_callers_get_their_own_results() -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CONCURRENT_SCRIPT], timeout=60, capture_output=True
        )
    except subprocess.TimeoutExpired:
        proc = None  # failed outside the handler: the script's text is not the news
    if proc is None:
        pytest.fail("concurrent kernel calls hung", pytrace=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


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
