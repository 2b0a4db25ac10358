"""Linear layers on the checkpoint's bfloat16 weights through lazarus's CPU GEMM.

MLX's CPU backend has no fast bfloat16 matmul, so without this a bfloat16 checkpoint computes in
float32 through BLAS: twice the bytes read per token and half the arithmetic rate of the CPU's
bfloat16 dot products. On CPUs with AVX512-BF16 (Intel Cooper Lake and Sapphire Rapids onwards,
AMD Zen 4 onwards) the model's ``nn.Linear`` modules are replaced, at load, by ``PackedLinear``
modules that keep the weights as stored (bfloat16, packed once for the kernel) and call
``_bf16_gemm.c``. Everything else (embeddings looked up in bfloat16 then widened, norms,
attention, the residual stream) stays in MLX and in float32. The module tree, its masks and its
control flow are the model's own: only the matmul kernel changes.

Numerics: the weights are the stored bfloat16 ones; products are exact in float32 and summed in
float32; the output and the residual stream stay float32. The float32 input is either split into
two bfloat16 parts, hi + lo, which carry 16 significant bits (``lazarus-bf16x2``, the default:
float32-accurate, twice the arithmetic), or rounded to bfloat16 as a bfloat16 model rounds its
activations (``lazarus-bf16``, ``--dtype bfloat16``: as fast as the hardware allows). On the tiny
parity models, rounding moved lens probabilities by up to 0.06; splitting, by 1e-4.

``LAZARUS_CPU_KERNEL=off`` disables the kernel (the float32 path is used instead).

Runs on the MLX worker thread (it creates MLX arrays).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

logger = logging.getLogger(__name__)

# What runs the linear layers, by how the float32 input is handed to the bfloat16 products.
FAST = "lazarus-bf16"  # rounded to bfloat16, as a bfloat16 model does
EXACT = "lazarus-bf16x2"  # split into two bfloat16 parts: float32-accurate, twice the arithmetic
PARTS = {FAST: 1, EXACT: 2}
_ENV = "LAZARUS_CPU_KERNEL"


@dataclass(frozen=True)
class KernelStatus:
    available: bool
    reason: str


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(_ENV, "").lower() in {"0", "off", "false", "no"}:
        return None, f"disabled by {_ENV}"
    spec = importlib.util.find_spec("lazarus_mcp._bf16_gemm")
    if spec is None or not spec.origin:
        return None, "not built (needs x86-64 Linux and a C compiler at install time)"
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError as exc:
        return None, f"could not load {spec.origin}: {exc}"
    if not lib.lz_supported():
        return None, "this CPU has no AVX512-BF16 instructions"
    vp, i = ctypes.c_void_p, ctypes.c_int
    lib.lz_packed_elems.restype = ctypes.c_size_t
    lib.lz_packed_elems.argtypes = [i, i]
    lib.lz_pack.restype = None
    lib.lz_pack.argtypes = [vp, i, i, vp, i]
    lib.lz_gemm.restype = i
    lib.lz_gemm.argtypes = [vp, i, i, vp, i, vp, vp, i, i]
    return lib, "AVX512-BF16"


def status() -> KernelStatus:
    lib, reason = _library()
    return KernelStatus(available=lib is not None, reason=reason)


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _bits(weight: mx.array) -> np.ndarray:
    """The weight as bfloat16 bits in a C-contiguous numpy array (evaluates it)."""
    bits = weight.astype(mx.bfloat16).view(mx.uint16)
    mx.eval(bits)
    return np.ascontiguousarray(np.asarray(bits))


def pack(weight: mx.array) -> np.ndarray:
    """The weight [n, k] as bfloat16 in the kernel's layout. A numpy buffer, not an MLX array:
    MLX would copy it (a second pass over every weight at load), and only the kernel reads it."""
    lib, _ = _library()
    assert lib is not None
    n, k = weight.shape
    packed = np.empty(lib.lz_packed_elems(n, k), dtype=np.uint16)
    lib.lz_pack(_bits(weight).ctypes.data, n, k, packed.ctypes.data, _threads())
    return packed


def _pointer(array: mx.array) -> int:
    mx.eval(array)
    return np.asarray(array).ctypes.data


def bf16_matmul(
    x: mx.array, packed: np.ndarray, n: int, bias: mx.array | None, parts: int
) -> mx.array:
    """x[..., k] @ W^T (+ bias) for W [n, k] packed by ``pack``; float32 in and out. ``parts``:
    1 rounds x to bfloat16, 2 splits it into two bfloat16 parts (see ``PARTS``)."""
    lib, _ = _library()
    assert lib is not None
    *lead, k = x.shape
    rows = np.ascontiguousarray(np.asarray(_evaluated(x.reshape(-1, k).astype(mx.float32))))
    out = np.empty((rows.shape[0], n), dtype=np.float32)
    bias_ptr = _pointer(bias) if bias is not None else None
    if lib.lz_gemm(
        rows.ctypes.data,
        rows.shape[0],
        k,
        packed.ctypes.data,
        n,
        bias_ptr,
        out.ctypes.data,
        parts,
        _threads(),
    ):
        raise MemoryError("the bfloat16 GEMM could not allocate its buffers")
    return mx.array(out).reshape(*lead, n)


def _evaluated(array: mx.array) -> mx.array:
    mx.eval(array)
    return array


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight kept as bfloat16 and packed for the CPU kernel."""

    def __init__(self, linear: nn.Linear, parts: int) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.parts = parts
        self.packed = pack(linear.weight)
        if "bias" in linear:
            self.bias = linear.bias

    def __call__(self, x: mx.array) -> mx.array:
        return bf16_matmul(x, self.packed, self.out_features, self.get("bias"), self.parts)


class BF16Embedding(nn.Module):
    """``nn.Embedding`` whose table stays bfloat16 (as bits, so dtype casts leave it alone);
    rows are widened to float32 on lookup. A tied unembedding (``as_linear``) uses the kernel."""

    def __init__(self, embedding: nn.Embedding, tied: bool, parts: int) -> None:
        super().__init__()
        self.num_embeddings, self.dims = embedding.weight.shape
        self.parts = parts
        self.table = mx.array(_bits(embedding.weight))
        if tied:
            self.packed = pack(embedding.weight)

    def __call__(self, ids: mx.array) -> mx.array:
        return self.table[ids].view(mx.bfloat16).astype(mx.float32)

    def as_linear(self, x: mx.array) -> mx.array:
        return bf16_matmul(x, self.packed, self.num_embeddings, None, self.parts)


def _parent(model: nn.Module, name: str) -> tuple[Any, str]:
    *path, last = name.split(".")
    parent: Any = model
    for part in path:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    return parent, last


def _swap(model: nn.Module, name: str, make: Any) -> None:
    parent, key = _parent(model, name)
    if isinstance(parent, list):
        parent[int(key)] = make(parent[int(key)])
    else:
        setattr(parent, key, make(parent[key]))


def packed_bytes(model: nn.Module) -> int:
    """The packed weights' bytes (held beside the model's MLX parameters)."""
    total = 0
    for _, module in model.named_modules():
        packed = getattr(module, "packed", None)
        if isinstance(packed, np.ndarray):
            total += packed.nbytes
    return total


def pack_model(model: nn.Module, tied: bool, matmul: str) -> int:
    """Replace the model's linear layers and embedding, one weight at a time: each is read,
    packed and its source dropped before the next (only names are held, not the modules).
    Returns how many modules were replaced."""
    parts = PARTS[matmul]
    kinds = {
        nn.Linear: lambda linear: PackedLinear(linear, parts),
        nn.Embedding: lambda embedding: BF16Embedding(embedding, tied, parts),
    }
    names = [(name, type(m)) for name, m in model.named_modules() if type(m) in kinds]
    for name, kind in names:
        _swap(model, name, kinds[kind])
    return len(names)
