"""``lazarus diagnostics``: what the process computes with (BLAS, threads, device, auto dtype).

Expectations come from the machine itself (the libraries mapped into the process, the CPU's
flags), not from the code under test.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.accel.diagnostics import Diagnostics, collect

runner = CliRunner()
LINUX_X86 = sys.platform == "linux" and platform.machine() == "x86_64"
DEFAULT_BLAS = not {
    "LAZARUS_BLAS",
    "MKL_THREADING_LAYER",
    "LAZARUS_CPU_KERNEL",
    "LAZARUS_SGEMM_FLOOR",
} & set(os.environ)
MAPS = Path("/proc/self/maps")
CPUINFO = Path("/proc/cpuinfo")


def _mapped() -> str:
    return MAPS.read_text() if MAPS.exists() else ""


def _cpu_has_avx512_bf16() -> bool:
    return CPUINFO.exists() and " avx512_bf16" in CPUINFO.read_text()


@pytest.mark.skipif(not MAPS.exists(), reason="needs /proc/self/maps (Linux)")
def test_the_reported_blas_is_the_library_in_the_process() -> None:
    report = collect()
    if report.blas_path is None:
        assert "libmkl_rt" not in _mapped()
    else:
        assert os.path.realpath(report.blas_path) in _mapped()


@pytest.mark.skipif(
    not (LINUX_X86 and DEFAULT_BLAS and CPUINFO.exists()),
    reason="the mkl wheel and the kernels are x86-64 Linux's; the user chose another setup",
)
def test_mkl_with_tbb_threads_and_the_kernel_where_the_cpu_has_it() -> None:
    report = collect()
    assert report.blas == "mkl"
    assert report.blas_threading == "tbb"
    assert "libtbb" in _mapped()
    assert report.blas_floor == "4 rows x 12 columns"  # accel/blas.py: ahead of MKL's sgemm
    assert "_sgemm_shape" in _mapped()
    assert report.device == "cpu"
    if _cpu_has_avx512_bf16():
        assert report.cpu_kernel.startswith("available")
        assert "lazarus-bf16x2" in report.auto_dtype
    else:
        assert "AVX512-BF16" in report.cpu_kernel
        assert report.auto_dtype.startswith("float32")


def test_cli_prints_diagnostics_as_json() -> None:
    result = runner.invoke(app, ["diagnostics", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == set(Diagnostics.model_fields)
    # Against what the machine says, not against collect() (which made this JSON): the
    # installed packages' metadata, the interpreter, the CPU count.
    assert data["lazarus"] == version("lazarus-mcp")
    for field, package in (("mlx", "mlx"), ("mlx_lm", "mlx-lm"), ("transformers", "transformers")):
        assert data[field] == version(package), field
    assert data["python"] == platform.python_version()
    assert data["cpu_count"] == os.cpu_count()
    assert data["device"] in {"cpu", "gpu"}
    assert data["device"] == "cpu" or data["gpu_available"]
