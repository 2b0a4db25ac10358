"""Builds lazarus's CPU GEMMs (lazarus_mcp/accel/csrc/) on x86-64 Linux.

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled
(no C compiler), the install still succeeds and lazarus computes in float32 through MKL instead.
"""

import platform
import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux") and platform.machine().lower() in {"x86_64", "amd64"}:
    extensions.append(
        Extension(
            "lazarus_mcp.accel._bf16_gemm",
            sources=[
                "lazarus_mcp/accel/csrc/_bf16_gemm.c",
                "lazarus_mcp/accel/csrc/_affine_gemm.c",
                "lazarus_mcp/accel/csrc/_widen_gemm.c",
                "lazarus_mcp/accel/csrc/_cell_stats.c",
                "lazarus_mcp/accel/csrc/_threads.c",
            ],
            depends=["lazarus_mcp/accel/csrc/_gemm.h"],
            extra_compile_args=["-O3", "-std=gnu11"],
            extra_link_args=["-pthread", "-lm"],
            optional=True,
        )
    )
    extensions.append(
        Extension(
            "lazarus_mcp.accel._sgemm_shape",
            sources=["lazarus_mcp/accel/csrc/_sgemm_shape.c"],
            extra_compile_args=["-O2", "-std=gnu11"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
