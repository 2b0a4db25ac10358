"""Load an optimized BLAS into the process before MLX is imported.

The Linux ``mlx-cpu`` wheel links the reference BLAS, whose float32 matmul runs ~75x below an
optimized one. MLX resolves ``cblas_sgemm`` dynamically, so a BLAS loaded with RTLD_GLOBAL
*before* ``mlx.core`` is imported serves every float32 matmul of the process. We use Intel's
``libmkl_rt`` from the PyPI ``mkl`` wheel (a declared dependency on x86-64 Linux): it installs
from the package registry, needs no system package, and exports the standard CBLAS symbols.

MKL's threads come from oneTBB (the ``tbb`` wheel, a dependency of ``mkl``) rather than its
default Intel OpenMP. On a machine whose cores are also busy with other work, OpenMP's spinning
barriers made the lens 10-40x slower (a preempted thread stalls every GEMM; passive waiting still
left it 2x slower than TBB), while TBB's work stealing degrades in proportion to the load; on a
quiet machine TBB was also the fastest of the three layers (0.40 s vs 0.57 s for the benchmark's
8-token lens). Without libtbb, Intel OpenMP is used with ``OMP_WAIT_POLICY=PASSIVE``. A user's
``MKL_THREADING_LAYER``, ``OMP_WAIT_POLICY``, ``KMP_BLOCKTIME`` or ``KMP_LIBRARY`` is respected.

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
    threading: str | None = None  # MKL's threading layer, when MKL is loaded


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


_MKL_THREADING_TBB = 4  # MKL_THREADING_TBB in mkl_service.h
_OPENMP_SETTINGS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "KMP_LIBRARY")


def _load_beside(mkl_path: str, pattern: str) -> ctypes.CDLL | None:
    """A library of the ``mkl`` wheel's dependencies, from the directory of libmkl_rt."""
    for path in sorted(glob.glob(os.path.join(os.path.dirname(mkl_path), pattern))):
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            logger.debug("could not load %s: %s", path, exc)
    return None


def _configure_threads(mkl: ctypes.CDLL, mkl_path: str) -> str:
    """Choose MKL's threading layer before its first call; returns the layer's name.

    TBB is chosen through MKL's API, not the environment: a child process inheriting
    ``MKL_THREADING_LAYER=TBB`` without libtbb preloaded would be ended by MKL at its first call.
    """
    layer = os.environ.get("MKL_THREADING_LAYER", "").strip().upper()
    if layer in ("", "TBB"):
        # libmkl_tbb_thread needs libtbb.so.12 but has no RUNPATH: load it from beside libmkl_rt.
        if _load_beside(mkl_path, "libtbb.so.1*") is not None:
            if not layer:
                mkl.MKL_Set_Threading_Layer(_MKL_THREADING_TBB)
            return "tbb"
        layer = layer or "INTEL"
    if layer == "INTEL" and not any(name in os.environ for name in _OPENMP_SETTINGS):
        # Read by the OpenMP runtime when MKL first starts it (so it must stay in the environment;
        # child processes inherit it harmlessly).
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "intel openmp (passive)"
    return layer.lower()


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
                library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                logger.debug("could not load %s: %s", path, exc)
                continue
            is_mkl = "mkl" in os.path.basename(path)
            threading = _configure_threads(library, path) if is_mkl else None
            name = "mkl" if is_mkl else os.path.basename(path)
            _status = BlasStatus(name, path, "preloaded before mlx.core", threading)
            break
    logger.debug(
        "BLAS: %s (%s; threading %s) on %s",
        _status.name,
        _status.reason,
        _status.threading or "n/a",
        platform.machine(),
    )
    return _status


def status() -> BlasStatus:
    return preload()
