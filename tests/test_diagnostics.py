"""``lazarus diagnostics``: what the process computes with (BLAS, threads, device, auto dtype)."""

from __future__ import annotations

import json
import os
import platform
import sys

import pytest
from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.accel import bf16_linear, blas, cpu_gemm
from lazarus_mcp.accel.diagnostics import collect

runner = CliRunner()
LINUX_X86 = sys.platform == "linux" and platform.machine() == "x86_64"
DEFAULT_BLAS = not {"LAZARUS_BLAS", "MKL_THREADING_LAYER"} & set(os.environ)


def test_diagnostics_report_the_preloaded_blas() -> None:
    report = collect()
    status = blas.status()
    assert (report.blas, report.blas_path, report.blas_threading) == (
        status.name,
        status.path,
        status.threading,
    )
    assert report.device in {"cpu", "gpu"}
    kernel = cpu_gemm.status()
    assert report.cpu_kernel == (
        f"available ({kernel.reason})" if kernel.available else kernel.reason
    )
    if report.device == "cpu" and kernel.available:
        assert bf16_linear.EXACT in report.auto_dtype
    elif report.device == "cpu":
        assert report.auto_dtype.startswith("float32")


@pytest.mark.skipif(
    not (LINUX_X86 and DEFAULT_BLAS),
    reason="the mkl wheel is a dependency on x86-64 Linux only; the user chose another BLAS",
)
def test_mkl_with_tbb_threads_serves_mlx_on_linux() -> None:
    report = collect()
    assert report.blas == "mkl"
    assert report.blas_threading == "tbb"


def test_cli_prints_diagnostics_as_json() -> None:
    result = runner.invoke(app, ["diagnostics", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["blas"] == blas.status().name
    assert {"mlx", "device", "auto_dtype", "blas_threading", "cpu_kernel"} <= set(data)
