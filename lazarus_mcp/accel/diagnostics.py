"""What this process computes with: the BLAS behind MLX's CPU matmuls, its threading, the device,
and the dtype ``auto`` picks there. Shown by ``lazarus diagnostics``; worth pasting into a bug
report about speed.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, Field

from lazarus_mcp.accel import blas


class Diagnostics(BaseModel):
    lazarus: str
    python: str
    platform: str
    cpu_count: int | None
    mlx: str
    mlx_lm: str
    transformers: str
    device: str = Field(description="MLX's default device (cpu or gpu).")
    gpu_available: bool
    blas: str = Field(description="The BLAS serving MLX's float32 CPU matmuls.")
    blas_path: str | None
    blas_reason: str
    blas_threading: str | None = Field(description="MKL's threading layer, when MKL is used.")
    blas_floor: str | None = Field(
        default=None,
        description="The smallest sgemm shape MKL is called with (a batch member then equals its "
        "single run), or why there is no floor; MKL only.",
    )
    cpu_kernel: str = Field(
        description="lazarus's bfloat16 CPU matmul kernel: 'available (...)' or why it is not."
    )
    auto_dtype: str = Field(description="What --dtype auto computes in on this device.")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _gpu_available() -> bool:
    import mlx.core as mx

    for backend in ("metal", "cuda"):
        module = getattr(mx, backend, None)
        try:
            if module is not None and module.is_available():
                return True
        except Exception:  # a backend without a driver may raise instead of answering
            continue
    return False


def collect(device: str | None = None) -> Diagnostics:
    """The diagnostics of this process; ``device`` as ``--device`` would set it."""
    status = blas.status()  # before mlx.core: the BLAS must be loaded first
    import mlx.core as mx

    from lazarus_mcp import __version__

    if device is not None:
        mx.set_default_device(getattr(mx, device))
    from lazarus_mcp.accel import bf16_linear, cpu_gemm

    on = "gpu" if mx.default_device() == mx.gpu else "cpu"
    kernel = cpu_gemm.status()
    if on != "cpu":
        auto = "the checkpoint's"
    elif kernel.available:
        auto = (
            f"bfloat16 and affine-quantized checkpoints: {bf16_linear.EXACT} (lazarus's kernels "
            "on the stored weights, float32-accurate); others: float32"
        )
    else:
        auto = "float32 (dequantizing quantized checkpoints)"
    return Diagnostics(
        lazarus=__version__,
        python=sys.version.split()[0],
        platform=f"{platform.platform()} ({platform.machine()})",
        cpu_count=os.cpu_count(),
        mlx=_version("mlx"),
        mlx_lm=_version("mlx-lm"),
        transformers=_version("transformers"),
        device=on,
        gpu_available=_gpu_available(),
        blas=status.name,
        blas_path=status.path,
        blas_reason=status.reason,
        blas_threading=status.threading,
        blas_floor=status.floor,
        cpu_kernel=f"available ({kernel.reason})" if kernel.available else kernel.reason,
        auto_dtype=auto,
    )


def render(diag: Diagnostics) -> str:
    width = max(len(name) for name in Diagnostics.model_fields)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in diag.model_dump().items())
