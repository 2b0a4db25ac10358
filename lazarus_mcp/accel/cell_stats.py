"""The fused cell statistics (``csrc/_cell_stats.c``): loading the kernel and calling it on
numpy rows of logits.

Per row of float32 logits [V], in two passes (threaded over rows): the maximum, log-sum-exp,
entropy, KL(reference || row), the top-k ids, and the log-probability, probability and
1-based rank of given ids. ``lens/stats.py`` stays the definition of each statistic (and the
path where this kernel is not built); ``tests/test_cell_stats.py`` holds the two together.
A row with a non-finite logit is only flagged (``bad``): its caller computes it with numpy.

``LAZARUS_STATS_KERNEL=off`` disables the kernel (the statistics then run in numpy).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass, replace

import numpy as np

from lazarus_mcp.accel.cpu_gemm import KernelStatus, open_extension

_ENV = "LAZARUS_STATS_KERNEL"


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    lib, why = open_extension(_ENV)
    if lib is None:
        return None, why
    vp, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.lz_stats_simd.restype, lib.lz_stats_simd.argtypes = i, []
    lib.lz_cell_stats.restype = i
    lib.lz_cell_stats.argtypes = [vp, i64, i64, *[vp] * 6, i, vp, vp, vp, i, *[vp] * 10, i, i]
    lib.lz_exp.restype, lib.lz_exp.argtypes = None, [vp, vp, i64, i]
    return lib, "AVX-512" if lib.lz_stats_simd() else "scalar"


def status() -> KernelStatus:
    lib, reason = _library()
    return KernelStatus(available=lib is not None, reason=reason)


def available() -> bool:
    return _library()[0] is not None


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RowStats:
    """The statistics of R rows (a row flagged ``bad`` has a non-finite logit: its other
    fields are unset)."""

    max: np.ndarray  # [R] float32
    log_sum: np.ndarray  # [R] float64: log sum exp(x - max)
    entropy: np.ndarray  # [R] float32, nats
    kl: np.ndarray | None  # [R] float32: KL(reference || row), with a reference
    top_ids: np.ndarray  # [R, k] int64, best first
    top_probs: np.ndarray  # [R, k] float32
    id_logprobs: np.ndarray  # [R, T] float32
    id_probs: np.ndarray  # [R, T] float32
    id_ranks: np.ndarray  # [R, T] int64, 1-based
    bad: np.ndarray  # [R] bool
    probs: np.ndarray | None = None  # [R, V] float32, where asked
    prob_sum: np.ndarray | None = None  # [R] float64, with probs


@dataclass(frozen=True)
class Reference:
    """The rows a KL is taken against (the model's own output at each cell): their logits
    [C, V], statistics computed with ``probs=True``, and each row's cell [R]."""

    logits: np.ndarray
    stats: RowStats
    cell_of: np.ndarray


def exp(x: np.ndarray, simd: bool = True) -> np.ndarray:
    """exp of float32 values by the kernel's own exponential (libm's ``expf`` with
    ``simd=False``): what its accuracy is tested on."""
    lib, reason = _library()
    if lib is None:
        raise RuntimeError(f"lazarus's statistics kernel is unavailable: {reason}")
    values = _c(x, np.float32)
    out = np.empty_like(values)
    lib.lz_exp(_ptr(values), _ptr(out), values.size, int(simd))
    return out


def _c(array: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=dtype)


def row_stats(
    logits: np.ndarray,
    top_k: int,
    ids: np.ndarray,
    reference: Reference | None = None,
    probs: bool = False,
    simd: bool = True,
) -> RowStats:
    """The statistics of each row of ``logits`` [R, V]; ``ids`` [R, T]: the ids whose
    log-probability, probability and rank each row reports. ``simd=False`` runs the scalar
    loop (the path of CPUs without AVX-512)."""
    lib, reason = _library()
    if lib is None:
        raise RuntimeError(f"lazarus's statistics kernel is unavailable: {reason}")
    x = _c(logits, np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"logits must be [rows, vocab], got shape {x.shape}")
    rows, vocab = x.shape
    if not 1 <= top_k <= vocab:
        raise ValueError(f"top_k must be between 1 and {vocab}")
    chosen = _c(ids, np.int32)
    if chosen.ndim != 2 or chosen.shape[0] != rows:
        raise ValueError(f"ids must be [rows, T] with {rows} rows, got shape {chosen.shape}")
    if chosen.size and (chosen.min() < 0 or chosen.max() >= vocab):
        raise ValueError(f"ids must be between 0 and {vocab - 1}")
    refs: list[np.ndarray | None] = [None] * 6
    if reference is not None:
        ref = reference.stats
        if ref.probs is None or ref.prob_sum is None:
            raise ValueError("a reference needs its probabilities (probs=True)")
        cell_of = _c(reference.cell_of, np.int32)
        cells = reference.logits.shape[0]
        if (
            reference.logits.shape[1:] != (vocab,)
            or cell_of.shape != (rows,)
            or (rows and (cell_of.min() < 0 or cell_of.max() >= cells))
        ):
            raise ValueError("the reference does not match the rows")
        refs = [
            _c(reference.logits, np.float32), _c(ref.probs, np.float32),
            _c(ref.max, np.float32), _c(ref.log_sum, np.float64),
            _c(ref.prob_sum, np.float64), cell_of,
        ]  # fmt: skip
    t = chosen.shape[1]
    out = RowStats(
        max=np.empty(rows, np.float32),
        log_sum=np.empty(rows, np.float64),
        entropy=np.empty(rows, np.float32),
        kl=np.empty(rows, np.float32) if reference is not None else None,
        top_ids=np.empty((rows, top_k), np.int32),
        top_probs=np.empty((rows, top_k), np.float32),
        id_logprobs=np.empty((rows, t), np.float32),
        id_probs=np.empty((rows, t), np.float32),
        id_ranks=np.empty((rows, t), np.int64),
        bad=np.zeros(rows, np.uint8),
        probs=np.empty((rows, vocab), np.float32) if probs else None,
        prob_sum=np.empty(rows, np.float64) if probs else None,
    )
    if lib.lz_cell_stats(
        _ptr(x), rows, vocab, *map(_ptr, refs), top_k, _ptr(out.top_ids), _ptr(out.top_probs),
        _ptr(chosen), t, _ptr(out.id_logprobs), _ptr(out.id_probs), _ptr(out.id_ranks),
        _ptr(out.max), _ptr(out.log_sum), _ptr(out.entropy), _ptr(out.kl), _ptr(out.probs),
        _ptr(out.prob_sum), _ptr(out.bad), int(simd), _threads(),
    ):  # fmt: skip
        raise MemoryError("the statistics kernel could not allocate its buffers")
    return replace(out, top_ids=out.top_ids.astype(np.int64), bad=out.bad.astype(bool))


def _ptr(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data
