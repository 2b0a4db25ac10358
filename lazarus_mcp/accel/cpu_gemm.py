"""lazarus's CPU GEMMs (``csrc/_bf16_gemm.c``, ``csrc/_affine_gemm.c``): loading them, packing
weights into their layouts, and calling them on MLX arrays.

Both multiply with the CPU's bfloat16 dot products (VDPBF16PS, AVX512-BF16: Intel Cooper Lake
and Sapphire Rapids onwards, AMD Zen 4 onwards), sum in float32 and return float32. The float32
input is either rounded to bfloat16 (``parts=1``, as a bfloat16 model rounds its activations)
or split into two bfloat16 parts, hi + lo, which carry 16 significant bits (``parts=2``: the
products are then float32-accurate, for twice the arithmetic).

Packed weights are numpy buffers, not MLX arrays: MLX would copy them (a second pass over every
weight at load), and only the kernels read them. Calls go through ctypes, which releases the GIL.

The boundary with MLX. The kernels run outside MLX's graph, so each call evaluates its input
(``mx.eval``: the kernel must read materialised memory), takes a numpy view of it (zero-copy for
an evaluated, row-contiguous MLX array; a copy only for a strided one; no ``astype`` when it is
already float32), and copies the kernel's output into a new MLX array (MLX cannot adopt a numpy
buffer). Measured over a forward of the benchmark's TinyLlama-shaped bfloat16 checkpoint (155
kernel calls; ``python examples/bench_boundary.py``; 2 cores at load average ~5, so absolute
times are 5-10x the quiet benchmark's): none of the 155 inputs needed a copy; the views took
3-5 ms, the checks 3-5 ms, the output copies with the Python around each call 29 ms of
0.94 s at 8 tokens (3%) and 108 ms of 20.3 s at 128 tokens (0.5%); the kernels 0.75 and 15.8 s.
An ``mx.eval`` round trip itself, against the same ops evaluated lazily at once, is lost in the
noise (-3 to +7 us each on a quieter run; < 1 ms per forward): MLX's CPU backend runs those
ops in order on one stream and fuses none without ``mx.compile``, so evaluating inside the graph
costs its synchronisation only. Details in ``docs/performance.md``.

Every call checks what the C code cannot: the input's width and the bias's length against the
packed weight's n and k, dtypes, element counts and C order (``BF16Weights``, ``AffineWeights``);
a mismatch raises ``ValueError`` instead of reading out of bounds. The helper threads serve one
caller at a time (a lock in ``csrc/_threads.c``), so several Python threads may call at once.

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

from lazarus_mcp.accel import dispatch

_ENV = "LAZARUS_CPU_KERNEL"


@dataclass(frozen=True)
class KernelStatus:
    available: bool
    reason: str


def open_extension(switch: str) -> tuple[ctypes.CDLL | None, str]:
    """The kernels' compiled extension, unless the environment variable ``switch`` turns it
    off; (None, why) where it is not built or cannot be loaded."""
    if os.environ.get(switch, "").lower() in {"0", "off", "false", "no"}:
        return None, f"disabled by {switch}"
    spec = importlib.util.find_spec("lazarus_mcp.accel._bf16_gemm")
    if spec is None or not spec.origin:
        return None, "not built (needs x86-64 Linux and a C compiler at install time)"
    try:
        return ctypes.CDLL(spec.origin), ""
    except OSError as exc:
        return None, f"could not load {spec.origin}: {exc}"


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    lib, why = open_extension(_ENV)
    if lib is None:
        return None, why
    if not lib.lz_supported():
        return None, "this CPU has no AVX512-BF16 instructions"
    vp, i = ctypes.c_void_p, ctypes.c_int
    signatures = {
        "lz_packed_elems": (ctypes.c_size_t, [i, i]),
        "lz_pack": (None, [vp, i, i, vp, i]),
        "lz_gemm": (i, [vp, i, i, vp, i, vp, vp, i, i]),
        "lz_gemm_widened": (i, [vp, i, i, vp, i, vp, vp, i]),
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
    """A C-contiguous numpy view of an evaluated MLX array; a copy only where MLX's buffer is
    strided (``np.asarray`` of an evaluated array shares its memory)."""
    mx.eval(array)
    return np.ascontiguousarray(np.asarray(array))


def _float32(array: mx.array) -> mx.array:
    return array if array.dtype == mx.float32 else array.astype(mx.float32)


def bf16_bits(weight: mx.array) -> np.ndarray:
    """The weight as bfloat16 bits (uint16)."""
    return _numpy(weight.astype(mx.bfloat16).view(mx.uint16))


def _packed_elems(n: int, k: int) -> int:
    """Elements of a weight [n, k] in the kernels' panel layout (``lz_packed_elems``)."""
    return -(-n // 32) * ((k + 1) // 2) * 64


def _require(array: np.ndarray, what: str, dtype: type, size: int) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        got = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"{what}: expected a numpy {np.dtype(dtype)} buffer, got {got}")
    if array.size != size or not array.flags.c_contiguous:
        raise ValueError(f"{what}: expected {size} contiguous elements, got {array.size}")


def _require_dims(n: int, k: int) -> None:
    if not (0 < n < 2**31 and 0 < k < 2**31):
        raise ValueError(f"weight shape [{n}, {k}] is out of the kernels' range")


@dataclass(frozen=True)
class BF16Weights:
    """A bfloat16 weight [n, k] in the bfloat16 kernel's layout (``pack_bf16``)."""

    packed: np.ndarray
    n: int
    k: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """The buffer is what the kernel will read for [n, k]: it reads by n and k alone."""
        _require_dims(self.n, self.k)
        _require(self.packed, "packed bfloat16 weight", np.uint16, _packed_elems(self.n, self.k))

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes


def pack_bf16(weight: mx.array) -> BF16Weights:
    """A weight [n, k] (any float dtype, rounded to bfloat16) in the bfloat16 kernel's layout."""
    lib = _lib()
    if weight.ndim != 2:
        raise ValueError(f"a weight must be [n, k], got shape {tuple(weight.shape)}")
    n, k = weight.shape
    _require_dims(n, k)
    packed = np.empty(lib.lz_packed_elems(n, k), dtype=np.uint16)
    lib.lz_pack(bf16_bits(weight).ctypes.data, n, k, packed.ctypes.data, _threads())
    return BF16Weights(packed, n, k)


@dataclass(frozen=True)
class AffineWeights:
    """Affine-quantized weights [n, k] (w = scale * q + bias per group) in the kernel's layout."""

    codes: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    group_size: int
    n: int
    k: int

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """The buffers are what the kernel will read for [n, k] in groups of ``group_size``."""
        _require_dims(self.n, self.k)
        if self.group_size <= 0 or self.group_size % 2 or self.k % self.group_size:
            raise ValueError(
                f"group size {self.group_size} must be even and divide the width {self.k}"
            )
        _require(self.codes, "packed affine codes", np.uint16, _packed_elems(self.n, self.k))
        groups = -(-self.n // 32) * 32 * (self.k // self.group_size)
        _require(self.scales, "packed affine scales", np.float32, groups)
        _require(self.biases, "packed affine biases", np.float32, groups)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + self.biases.nbytes


def pack_affine(
    q: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int
) -> AffineWeights:
    """MLX's packed codes q [n, k * bits / 32] (bits 2, 4 or 8) with their scales and biases
    [n, k / group_size]; the codes become bfloat16 integers (exact), scales and biases float32."""
    lib = _lib()
    if bits not in (2, 4, 8) or q.ndim != 2 or q.dtype != mx.uint32:
        raise ValueError(f"expected uint32 codes [n, k * bits / 32] of 2, 4 or 8 bits, got {bits}")
    codes_in = _numpy(q)
    n, k = codes_in.shape[0], codes_in.shape[1] * 32 // bits
    _require_dims(n, k)
    if group_size <= 0 or group_size % 2 or k % group_size:
        raise ValueError(f"group size {group_size} must be even and divide the width {k}")
    groups = k // group_size
    for name, values in (("scales", scales), ("biases", biases)):
        if tuple(values.shape) != (n, groups):
            raise ValueError(f"{name}: expected shape ({n}, {groups}), got {tuple(values.shape)}")
    codes = np.empty(lib.lz_packed_elems(n, k), dtype=np.uint16)
    lib.lz_pack_codes(codes_in.ctypes.data, n, k, bits, codes.ctypes.data, _threads())
    panels = -(-n // 32)
    packed = []
    for values in (scales, biases):
        source = _numpy(_float32(values))
        out = np.empty(panels * groups * 32, dtype=np.float32)
        lib.lz_pack_groups(source.ctypes.data, n, groups, out.ctypes.data)
        packed.append(out)
    return AffineWeights(codes, packed[0], packed[1], group_size, n, k)


def _check_call(rows: np.ndarray, k: int, bias: np.ndarray | None, n: int) -> None:
    """What the kernels read beside the weights: rows [m, k] and a bias [n], float32, C order."""
    if rows.ndim != 2 or rows.shape[1] != k:
        raise ValueError(f"input width {rows.shape[-1]} does not match the weight's width {k}")
    if rows.dtype != np.float32 or not rows.flags.c_contiguous or rows.shape[0] >= 2**31:
        raise ValueError("the input rows must be C-contiguous float32, fewer than 2^31")
    if bias is not None and (
        bias.shape != (n,) or bias.dtype != np.float32 or not bias.flags.c_contiguous
    ):
        raise ValueError(f"bias: expected float32 of shape ({n},), got {bias.dtype} {bias.shape}")


def gemm_bf16(
    rows: np.ndarray, weights: BF16Weights, bias: np.ndarray | None, parts: int
) -> np.ndarray:
    """rows [m, k] @ W^T (+ bias) for W [n, k] packed by ``pack_bf16``: float32 [m, n]."""
    weights.check()
    _check_call(rows, weights.k, bias, weights.n)
    if parts not in (1, 2):
        raise ValueError(f"parts must be 1 or 2, got {parts}")
    m = rows.shape[0]
    out = np.empty((m, weights.n), dtype=np.float32)
    if m == 0:  # nothing to multiply (and nothing for the kernel to allocate)
        return out
    if _lib().lz_gemm(
        rows.ctypes.data, m, weights.k, weights.packed.ctypes.data, weights.n, _pointer(bias),
        out.ctypes.data, parts, _threads(),
    ):  # fmt: skip
        raise MemoryError("the bfloat16 GEMM could not allocate its buffers")
    return out


def gemm_widened(rows: np.ndarray, weights: BF16Weights, bias: np.ndarray | None) -> np.ndarray:
    """rows [m, k] @ W^T (+ bias) in float32 FMAs, the packed bfloat16 weights widened to
    float32 in registers (``csrc/_widen_gemm.c``): float32 [m, n], float32-accurate."""
    weights.check()
    _check_call(rows, weights.k, bias, weights.n)
    m = rows.shape[0]
    out = np.empty((m, weights.n), dtype=np.float32)
    if m == 0:
        return out
    if _lib().lz_gemm_widened(
        rows.ctypes.data, m, weights.k, weights.packed.ctypes.data, weights.n, _pointer(bias),
        out.ctypes.data, _threads(),
    ):  # fmt: skip
        raise MemoryError("the widened GEMM could not allocate its buffers")
    return out


def gemm_exact(rows: np.ndarray, weights: BF16Weights, bias: np.ndarray | None) -> np.ndarray:
    """rows [m, k] @ W^T (+ bias), float32-accurate, by the faster kernel for m rows
    (``dispatch.exact_kernel``)."""
    if dispatch.exact_kernel(rows.shape[0]) == dispatch.SPLIT:
        return gemm_bf16(rows, weights, bias, 2)
    return gemm_widened(rows, weights, bias)


def gemm_affine(rows: np.ndarray, weights: AffineWeights, bias: np.ndarray | None) -> np.ndarray:
    """rows [m, k] @ (scale * q + bias)^T (+ the layer's bias): float32 [m, n], accurate."""
    w = weights
    w.check()
    _check_call(rows, w.k, bias, w.n)
    m = rows.shape[0]
    out = np.empty((m, w.n), dtype=np.float32)
    if m == 0:
        return out
    if _lib().lz_gemm_affine(
        rows.ctypes.data, m, w.k, w.codes.ctypes.data, w.scales.ctypes.data,
        w.biases.ctypes.data, w.group_size, w.n, _pointer(bias), out.ctypes.data, _threads(),
    ):  # fmt: skip
        raise MemoryError("the affine GEMM could not allocate its buffers")
    return out


def _rows(x: mx.array, k: int) -> tuple[np.ndarray, list[int]]:
    *lead, width = x.shape
    if width != k:  # checked before MLX reshapes (a wrong width would still reshape)
        raise ValueError(f"input width {width} does not match the weight's width {k}")
    return _numpy(_float32(x.reshape(-1, k))), lead


def _bias(bias: mx.array | None) -> np.ndarray | None:
    return None if bias is None else _numpy(_float32(bias))


def _pointer(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def bf16_matmul(x: mx.array, weights: BF16Weights, bias: mx.array | None, parts: int) -> mx.array:
    """x[..., k] @ W^T (+ bias) for W [n, k] packed by ``pack_bf16``; float32 in and out.
    ``parts=1``: x rounded to bfloat16; ``parts=2``: float32-accurate (``gemm_exact``)."""
    rows, lead = _rows(x, weights.k)
    if parts == 2:
        out = gemm_exact(rows, weights, _bias(bias))
    else:
        out = gemm_bf16(rows, weights, _bias(bias), parts)
    return mx.array(out).reshape(*lead, weights.n)


def affine_matmul(x: mx.array, weights: AffineWeights, bias: mx.array | None) -> mx.array:
    """x[..., k] @ (scale * q + bias)^T (+ the layer's bias), float32-accurate (parts=2)."""
    rows, lead = _rows(x, weights.k)
    out = gemm_affine(rows, weights, _bias(bias))
    return mx.array(out).reshape(*lead, weights.n)
