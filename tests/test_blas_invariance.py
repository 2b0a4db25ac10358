"""A row (a column) of a float32 product is the same whatever the number of rows (columns)
computed with it: the sgemm floor over MKL (``accel/blas.py``, ``csrc/_sgemm_shape.c``), which
makes a batch member bitwise its single run. Without it MKL rounds products of fewer than 4 rows
or 12 columns on another path (``LAZARUS_SGEMM_FLOOR=off`` makes the first test fail)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest


@pytest.mark.parametrize("k", [16, 64, 200])
def test_a_row_and_a_column_are_the_same_whatever_the_height_and_width(k: int) -> None:
    rng = np.random.default_rng(k)
    a = rng.standard_normal((40, k)).astype(np.float32)
    b = rng.standard_normal((40, k)).astype(np.float32)
    whole = np.array(mx.array(a) @ mx.array(b).T)
    for m in range(1, 41):
        assert np.array_equal(np.array(mx.array(a[:m]) @ mx.array(b).T), whole[:m]), m
    for n in range(1, 41):
        assert np.array_equal(np.array(mx.array(a) @ mx.array(b[:n]).T), whole[:, :n]), n


@pytest.mark.parametrize(("trans_a", "trans_b"), list(itertools.product([False, True], repeat=2)))
def test_products_under_the_floor_are_right_in_every_layout(trans_a: bool, trans_b: bool) -> None:
    """Transposed operands (MLX passes them as CblasTrans), a strided one (a column slice), and
    alpha/beta (addmm), each padded below the floor, against numpy in float64."""
    rng = np.random.default_rng(7)
    for m, n, k in [(1, 1, 5), (2, 11, 16), (3, 40, 33), (7, 3, 64), (1, 300, 8)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
        c = rng.standard_normal((m, n)).astype(np.float32)
        ma = mx.array(a).T if trans_a else mx.array(a)
        mb = mx.array(b).T if trans_b else mx.array(b)
        want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
        np.testing.assert_allclose(np.array(ma @ mb), want, rtol=1e-5, atol=1e-5)
        got = mx.addmm(mx.array(c), ma, mb, alpha=0.5, beta=2.0)
        np.testing.assert_allclose(np.array(got), 0.5 * want + 2.0 * c, rtol=1e-5, atol=1e-5)
        wide = mx.array(rng.standard_normal((m, 2 * k)).astype(np.float32))
        sliced = wide[:, ::2]  # every other column: a strided operand
        want = np.array(sliced).astype(np.float64) @ (b.T if trans_b else b)
        np.testing.assert_allclose(np.array(sliced @ mb), want, rtol=1e-5, atol=1e-5)


def test_the_shim_computes_when_mkl_then_fails_to_load(tmp_path: Path) -> None:
    """The shim is loaded before MKL (it must come first); if MKL then fails to load, MLX's
    products still reach a BLAS (the next ``cblas_sgemm`` in the process) instead of a null
    pointer."""
    code = (
        "from lazarus_mcp.runtime.process import prepare_process\n"
        "print(prepare_process().name)\n"
        "import mlx.core as mx\n"
        "print((mx.ones((2, 3)) @ mx.ones((3, 5))).sum().item())\n"
    )
    env = {**os.environ, "LAZARUS_BLAS": str(tmp_path / "libmkl_rt.so.3")}  # no such file
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["reference", "30.0"]
