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

A batch member equals its single run. MKL's sgemm rounds a product of fewer than 4 rows or
fewer than 12 columns on another code path than a larger one (MKL 2026.2, AMD Zen 4; measured
over 1-96 rows and columns, K 16-576, and 1-700 rows at K = N = 2048: at 4+ rows and 12+ columns
every row and column is bitwise the same whatever the height and width). So a prompt of 1-3
tokens (height) and attention scores over fewer than 12 keys (width: ``q @ k.T`` inside the
model's own attention) rounded differently from the same prompt inside a right-padded batch,
whose padding widens both: a batch member's probabilities moved by up to 3.2e-6 (gemma parity
checkpoint; qwen3 2.1e-6, llama 1.9e-6; entropies up to 1.1e-5). MKL's Conditional Numerical
Reproducibility does not help: ``MKL_CBWR=AVX512,STRICT`` (or AVX2, or COMPATIBLE) left the same
dependence. The shim ``csrc/_sgemm_shape.c`` multiplies zero-padded copies below that floor
(``SGEMM_FLOOR``) and calls MKL unchanged above it; it is placed in the process's global
namespace ahead of MKL so that it is the ``cblas_sgemm`` MLX resolves (MKL is loaded locally,
the shim initialised and made global, then MKL). With it a batch member is bitwise its single
run on all ten parity families, as with MLX's reference BLAS.

What the floor costs: nothing above it (one comparison per call; a 128-token lens pads no
product), copies of the small operand below it. On the benchmark's TinyLlama-shaped model
converted to float32, floor on and off interleaved in one process (5 rounds, medians, load
average 7 on 2 cores): a lens of 8 tokens 1.65 s vs 1.58 s, of 128 tokens 10.5 s vs 10.1 s
(ratios 1.04, inside the rounds' spread of +-20%); a second run (``python
examples/bench_sgemm_floor.py``, load average 4): 1.23 s vs 1.25 s and 7.81 s vs 7.74 s (0.99,
1.01). One row padded to four costs MKL's matrix-matrix path 2-3x its matrix-vector one (a
one-token step 1.16 s vs 0.44 s, then 0.81 s vs 0.34 s; the 32000 x 2048 head 33 ms vs 9-14 ms),
so a generation's one-token steps run without the floor (:func:`without_floor`): they have no
batch to agree with. ``LAZARUS_SGEMM_FLOOR=off`` disables the shim (MKL alone).

``LAZARUS_BLAS=reference`` skips the preload; ``LAZARUS_BLAS=/path/to/libblas.so`` loads another
CBLAS library instead (without the shim, whose floor is MKL's).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlasStatus:
    name: str
    path: str | None
    reason: str
    threading: str | None = None  # MKL's threading layer, when MKL is loaded
    floor: str | None = None  # the sgemm shape floor, or why there is none (MKL only)


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


SGEMM_FLOOR = (4, 12)  # rows, columns: MKL's large-matrix path (see the module docstring)
_FLOOR_ENV = "LAZARUS_SGEMM_FLOOR"


_shim: ctypes.CDLL | None = None


def _shim_ahead_of(mkl: ctypes.CDLL) -> str:
    """Load the sgemm shim, hand it MKL's ``cblas_sgemm`` and only then make it global: MKL was
    loaded locally and is made global after it, so the shim comes first in the process's
    namespace, and no call can reach it uninitialised (had MKL failed to load after a global
    shim, MLX's first product called a null pointer). Returns the floor, or why there is none."""
    global _shim
    if os.environ.get(_FLOOR_ENV, "").strip().lower() in {"0", "off", "false", "no"}:
        return f"disabled by {_FLOOR_ENV}"
    import importlib.util

    spec = importlib.util.find_spec("lazarus_mcp.accel._sgemm_shape")
    if spec is None or not spec.origin:
        return "not built (needs x86-64 Linux and a C compiler at install time)"
    try:
        shim = ctypes.CDLL(spec.origin, mode=ctypes.RTLD_LOCAL)
        init = shim.lz_sgemm_shape_init
        init.restype, init.argtypes = None, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        init(ctypes.cast(mkl.cblas_sgemm, ctypes.c_void_p).value, *SGEMM_FLOOR)
        shim.lz_sgemm_shape_enable.restype = None
        shim.lz_sgemm_shape_enable.argtypes = [ctypes.c_int]
        ctypes.CDLL(spec.origin, mode=ctypes.RTLD_GLOBAL)  # now visible, ahead of MKL
    except (OSError, AttributeError) as exc:
        return f"could not load {spec.origin}: {exc}"
    _shim = shim
    return f"{SGEMM_FLOOR[0]} rows x {SGEMM_FLOOR[1]} columns"


@contextmanager
def without_floor() -> Iterator[None]:
    """MKL's own paths for the products computed inside (a generation's one-token steps: padded
    to 4 rows, TinyLlama-shaped float32 products took 2-3x as long as MKL's matrix-vector path,
    e.g. 33 ms against 9-14 ms for the 32000 x 2048 head). Only the MLX worker thread computes,
    and it evaluates inside; a no-op without the shim."""
    if _shim is None:
        yield
        return
    _shim.lz_sgemm_shape_enable(0)
    try:
        yield
    finally:
        _shim.lz_sgemm_shape_enable(1)


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
            is_mkl = "mkl" in os.path.basename(path)
            try:
                # MKL locally first: the shim goes into the global namespace ahead of it.
                library = ctypes.CDLL(
                    path, mode=ctypes.RTLD_LOCAL if is_mkl else ctypes.RTLD_GLOBAL
                )
            except OSError as exc:
                logger.debug("could not load %s: %s", path, exc)
                continue
            threading = floor = None
            if is_mkl:
                threading = _configure_threads(library, path)
                floor = _shim_ahead_of(library)
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)  # promoted: MLX resolves it now
            name = "mkl" if is_mkl else os.path.basename(path)
            _status = BlasStatus(name, path, "preloaded before mlx.core", threading, floor)
            break
    logger.debug(
        "BLAS: %s (%s; threading %s; sgemm floor %s) on %s",
        _status.name,
        _status.reason,
        _status.threading or "n/a",
        _status.floor or "n/a",
        platform.machine(),
    )
    return _status


def status() -> BlasStatus:
    return preload()
