"""lazarus's CPU GEMMs (``csrc/_bf16_gemm.c``, ``csrc/_affine_gemm.c``): loading them, packing
weights into their layouts, and calling them on MLX arrays.

Both multiply with the CPU's bfloat16 dot products (VDPBF16PS, AVX512-BF16: Intel Cooper Lake
and Sapphire Rapids onwards, AMD Zen 4 onwards), sum in float32 and return float32. The float32
input is either rounded to bfloat16 (``parts=1``, as a bfloat16 model rounds its activations)
or split into two bfloat16 parts, hi + lo, which carry 16 significant bits (``parts=2``: the
products are then float32-accurate, for twice the arithmetic).

Packed weights are numpy buffers, not MLX arrays: MLX would copy them (a second pass over every
weight at load), and only the kernels read them. Calls go through ctypes, which releases the GIL.

``LAZARUS_CPU_KERNEL=off`` disables the kernels (lazarus then computes in float32 through BLAS).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

_ENV = "LAZARUS_CPU_KERNEL"


@dataclass(frozen=True)
class KernelStatus:
    available: bool
    reason: str


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(_ENV, "").lower() in {"0", "off", "false", "no"}:
        return None, f"disabled by {_ENV}"
    spec = importlib.util.find_spec("lazarus_mcp.accel._bf16_gemm")
    if spec is None or not spec.origin:
        return None, "not built (needs x86-64 Linux and a C compiler at install time)"
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError as exc:
        return None, f"could not load {spec.origin}: {exc}"
    if not lib.lz_supported():
        return None, "this CPU has no AVX512-BF16 instructions"
    vp, i = ctypes.c_void_p, ctypes.c_int
    signatures = {
        "lz_packed_elems": (ctypes.c_size_t, [i, i]),
        "lz_pack": (None, [vp, i, i, vp, i]),
        "lz_gemm": (i, [vp, i, i, vp, i, vp, vp, i, i]),
        "lz_pack_codes": (None, [vp, i, i, i, vp, i]),
        "lz_pack_groups": (None, [vp, i, i, vp]),
        "lz_gemm_affine": (i, [vp, i, i, vp, vp, vp, i, i, vp, vp, i]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib, "AVX512-BF16"


def _lib() -> ctypes.CDLL:
    lib, reason = _library()
    if lib is None:
        raise RuntimeError(f"lazarus's CPU GEMM is unavailable: {reason}")
    return lib


def status() -> KernelStatus:
    lib, reason = _library()
    return KernelStatus(available=lib is not None, reason=reason)


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _numpy(array: mx.array) -> np.ndarray:
    """A C-contiguous numpy view (or copy) of an evaluated MLX array."""
    mx.eval(array)
    return np.ascontiguousarray(np.asarray(array))


def bf16_bits(weight: mx.array) -> np.ndarray:
    """The weight as bfloat16 bits (uint16)."""
    return _numpy(weight.astype(mx.bfloat16).view(mx.uint16))


def pack_bf16(weight: mx.array) -> np.ndarray:
    """A weight [n, k] (any float dtype, rounded to bfloat16) in the bfloat16 kernel's layout."""
    lib = _lib()
    n, k = weight.shape
    packed = np.empty(lib.lz_packed_elems(n, k), dtype=np.uint16)
    lib.lz_pack(bf16_bits(weight).ctypes.data, n, k, packed.ctypes.data, _threads())
    return packed


@dataclass(frozen=True)
class AffineWeights:
    """Affine-quantized weights [n, k] (w = scale * q + bias per group) in the kernel's layout."""

    codes: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    group_size: int
    n: int
    k: int

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + self.biases.nbytes


def pack_affine(
    q: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int
) -> AffineWeights:
    """MLX's packed codes q [n, k * bits / 32] (bits 2, 4 or 8) with their scales and biases
    [n, k / group_size]; the codes become bfloat16 integers (exact), scales and biases float32."""
    lib = _lib()
    codes_in = _numpy(q)
    n, k = codes_in.shape[0], codes_in.shape[1] * 32 // bits
    groups = k // group_size
    codes = np.empty(lib.lz_packed_elems(n, k), dtype=np.uint16)
    lib.lz_pack_codes(codes_in.ctypes.data, n, k, bits, codes.ctypes.data, _threads())
    panels = -(-n // 32)
    packed = []
    for values in (scales, biases):
        source = _numpy(values.astype(mx.float32))
        out = np.empty(panels * groups * 32, dtype=np.float32)
        lib.lz_pack_groups(source.ctypes.data, n, groups, out.ctypes.data)
        packed.append(out)
    return AffineWeights(codes, packed[0], packed[1], group_size, n, k)


def _rows(x: mx.array) -> tuple[np.ndarray, list[int]]:
    *lead, k = x.shape
    return _numpy(x.reshape(-1, k).astype(mx.float32)), lead


def _bias(bias: mx.array | None) -> np.ndarray | None:
    return None if bias is None else _numpy(bias.astype(mx.float32))


def _pointer(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def bf16_matmul(
    x: mx.array, packed: np.ndarray, n: int, bias: mx.array | None, parts: int
) -> mx.array:
    """x[..., k] @ W^T (+ bias) for W [n, k] packed by ``pack_bf16``; float32 in and out."""
    rows, lead = _rows(x)
    b = _bias(bias)  # held until the call returns
    out = np.empty((rows.shape[0], n), dtype=np.float32)
    m, k = rows.shape
    if m == 0:  # nothing to multiply (and nothing for the kernel to allocate)
        return mx.zeros((*lead, n), dtype=mx.float32)
    if _lib().lz_gemm(
        rows.ctypes.data, m, k, packed.ctypes.data, n, _pointer(b), out.ctypes.data, parts,
        _threads(),
    ):  # fmt: skip
        raise MemoryError("the bfloat16 GEMM could not allocate its buffers")
    return mx.array(out).reshape(*lead, n)


def affine_matmul(x: mx.array, weights: AffineWeights, bias: mx.array | None) -> mx.array:
    """x[..., k] @ (scale * q + bias)^T (+ the layer's bias), float32-accurate (parts=2)."""
    rows, lead = _rows(x)
    b = _bias(bias)  # held until the call returns
    w = weights
    out = np.empty((rows.shape[0], w.n), dtype=np.float32)
    if rows.shape[0] == 0:
        return mx.zeros((*lead, w.n), dtype=mx.float32)
    if _lib().lz_gemm_affine(
        rows.ctypes.data, rows.shape[0], w.k, w.codes.ctypes.data, w.scales.ctypes.data,
        w.biases.ctypes.data, w.group_size, w.n, _pointer(b), out.ctypes.data, _threads(),
    ):  # fmt: skip
        raise MemoryError("the affine GEMM could not allocate its buffers")
    return mx.array(out).reshape(*lead, w.n)
