"""Load an optimized BLAS into the process before MLX is imported.

The Linux ``mlx-cpu`` wheel links the reference BLAS, whose float32 matmul runs ~75x below an
optimized one. MLX resolves ``cblas_sgemm`` dynamically, so a BLAS loaded with RTLD_GLOBAL
*before* ``mlx.core`` is imported serves every float32 matmul of the process. We use Intel's
``libmkl_rt`` from the PyPI ``mkl`` wheel (a declared dependency on x86-64 Linux): it installs
from the package registry, needs no system package, and exports the standard CBLAS symbols.

``LAZARUS_BLAS=reference`` skips the preload; ``LAZARUS_BLAS=/path/to/libblas.so`` loads another
CBLAS library instead.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import platform
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlasStatus:
    name: str
    path: str | None
    reason: str


_status: BlasStatus | None = None


def _mkl_candidates() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    found: list[str] = []
    for root in roots:
        found += sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")))
    try:
        from importlib.metadata import PackageNotFoundError, files

        try:
            for f in files("mkl") or []:
                if os.path.basename(str(f)).startswith("libmkl_rt.so"):
                    found.append(str(f.locate()))
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - stdlib always has it on 3.10+
        pass
    return [p for p in dict.fromkeys(found) if os.path.isfile(p)]


def preload() -> BlasStatus:
    """Load the BLAS once per process; later calls return what the first one did."""
    global _status
    if _status is not None:
        return _status
    choice = os.environ.get("LAZARUS_BLAS", "auto").strip()
    if "mlx.core" in sys.modules:
        _status = BlasStatus("mlx default", None, "mlx.core was imported before lazarus_mcp")
    elif choice.lower() in {"reference", "none", "off", "0"}:
        _status = BlasStatus("mlx default", None, "LAZARUS_BLAS disables the preload")
    elif sys.platform != "linux":
        _status = BlasStatus("mlx default", None, f"{sys.platform} uses MLX's own backend")
    else:
        paths = [choice] if choice.lower() != "auto" else _mkl_candidates()
        _status = BlasStatus("reference", None, "no optimized BLAS found (pip install mkl)")
        for path in paths:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                logger.debug("could not load %s: %s", path, exc)
                continue
            name = "mkl" if "mkl" in os.path.basename(path) else os.path.basename(path)
            _status = BlasStatus(name, path, "preloaded before mlx.core")
            break
    logger.debug("BLAS: %s (%s) on %s", _status.name, _status.reason, platform.machine())
    return _status


def status() -> BlasStatus:
    return preload()
