"""Linear layers through lazarus's CPU GEMMs (``cpu_gemm``), swapped into a loaded model.

MLX's CPU backend has no fast bfloat16 or quantized matmul, so without these a model computes
in float32 through BLAS: for a bfloat16 checkpoint, twice the bytes read per token and half the
arithmetic rate of the CPU's bfloat16 dot products. At load the model's linear layers (and a
tied unembedding) are replaced by modules that keep the stored weights, packed once for the
kernels. Everything else (embedding lookups, norms, attention, the residual stream) stays in
MLX and in float32. The module tree, its masks and its control flow are the model's own: only
the matmul kernel changes.

Two ways to run them (``ModelInfo.matmul``):

- ``lazarus-bf16x2`` (``--dtype auto``): float32-accurate. bfloat16 weights are used as
  stored, by the kernel ``dispatch`` picks for the row count: below 32 rows the inputs split
  into two bfloat16 parts, from 32 rows (long prompts, grids' head projections, batches)
  float32 FMAs on the weights widened in registers. Affine-quantized weights are used as MLX's
  GPU kernels use them, scale * (x . q) + bias * sum(x) per group, never rounding
  scale * q + bias.
- ``lazarus-bf16`` (``--dtype bfloat16``): inputs rounded to bfloat16, as a bfloat16 model does
  (quantized weights dequantized to bfloat16 by MLX first): the hardware's full speed. On the
  parity models this moved lens probabilities by up to 0.06, where splitting moved them by 1e-4.

Runs on the MLX worker thread (it creates MLX arrays).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.accel import cpu_gemm
from lazarus_mcp.schema import QuantizationInfo

FAST = "lazarus-bf16"
EXACT = "lazarus-bf16x2"
PARTS = {FAST: 1, EXACT: 2}
_AFFINE_BITS = (2, 4, 8)


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight kept as bfloat16 and packed for the kernel."""

    def __init__(self, linear: nn.Linear, parts: int) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.parts = parts
        self.packed = cpu_gemm.pack_bf16(linear.weight)
        if "bias" in linear:
            self.bias = linear.bias

    def __call__(self, x: mx.array) -> mx.array:
        bias = self.get("bias")
        return cpu_gemm.bf16_matmul(x, self.packed, bias, self.parts)


class BF16Embedding(nn.Module):
    """``nn.Embedding`` whose table stays bfloat16 (as bits, so dtype casts leave it alone);
    rows are widened to float32 on lookup. A tied unembedding (``as_linear``) uses the kernel."""

    def __init__(self, embedding: nn.Embedding, tied: bool, parts: int) -> None:
        super().__init__()
        self.num_embeddings, self.dims = embedding.weight.shape
        self.parts = parts
        self.table = mx.array(cpu_gemm.bf16_bits(embedding.weight))
        if tied:
            self.packed = cpu_gemm.pack_bf16(embedding.weight)

    def __call__(self, ids: mx.array) -> mx.array:
        return self.table[ids].view(mx.bfloat16).astype(mx.float32)

    def as_linear(self, x: mx.array) -> mx.array:
        return cpu_gemm.bf16_matmul(x, self.packed, None, self.parts)


def affine_kernel_computes(quantization: QuantizationInfo) -> bool:
    """Whether the affine kernel computes a checkpoint quantized so (its layers are checked
    one by one at load: any it does not compute stay MLX's, dequantized to float32)."""
    return quantization.mode == "affine" and quantization.bits in _AFFINE_BITS


def affine_supported(module: nn.Module) -> bool:
    """A quantized layer the affine kernel computes: MLX's affine mode, 2/4/8 bits, whole even
    groups."""
    k = module.weight.shape[-1] * 32 // module.bits
    return (
        getattr(module, "mode", "affine") == "affine"
        and module.bits in _AFFINE_BITS
        and module.group_size % 2 == 0
        and k % module.group_size == 0
        and module.get("biases") is not None
    )


def _affine(module: nn.Module) -> cpu_gemm.AffineWeights:
    return cpu_gemm.pack_affine(
        module.weight, module.scales, module.biases, module.group_size, module.bits
    )


class AffineLinear(nn.Module):
    """``nn.QuantizedLinear`` through the affine kernel, float32-accurate."""

    def __init__(self, linear: nn.QuantizedLinear) -> None:
        super().__init__()
        self.packed = _affine(linear)
        if "bias" in linear:
            self.bias = linear.bias

    def __call__(self, x: mx.array) -> mx.array:
        return cpu_gemm.affine_matmul(x, self.packed, self.get("bias"))


class AffineEmbedding(nn.Module):
    """A tied ``nn.QuantizedEmbedding``: lookups by the model's own module (dequantized to
    float32 at load), the unembedding (``as_linear``) through the affine kernel."""

    def __init__(self, embedding: nn.QuantizedEmbedding) -> None:
        super().__init__()
        self.packed = _affine(embedding)
        self.table = embedding

    def __call__(self, ids: mx.array) -> mx.array:
        return self.table(ids)

    def as_linear(self, x: mx.array) -> mx.array:
        return cpu_gemm.affine_matmul(x, self.packed, None)


def packed_bytes(model: nn.Module) -> int:
    """The packed weights' bytes (held beside the model's MLX parameters)."""
    total = 0
    for _, module in model.named_modules():
        packed = getattr(module, "packed", None)
        if isinstance(packed, (cpu_gemm.BF16Weights, cpu_gemm.AffineWeights)):
            total += packed.nbytes
    return total


def _replacement(module: nn.Module, tied: bool, matmul: str) -> Callable[[Any], Any] | None:
    parts = PARTS[matmul]
    exact = matmul == EXACT
    if type(module) is nn.Linear and not (exact and module.weight.dtype != mx.bfloat16):
        return lambda linear: PackedLinear(linear, parts)
    if type(module) is nn.Embedding and not (exact and module.weight.dtype != mx.bfloat16):
        return lambda embedding: BF16Embedding(embedding, tied, parts)
    if exact and type(module) is nn.QuantizedLinear and affine_supported(module):
        return AffineLinear
    if exact and tied and type(module) is nn.QuantizedEmbedding and affine_supported(module):
        return AffineEmbedding
    return None


def _parent(model: nn.Module, name: str) -> tuple[Any, str]:
    *path, last = name.split(".")
    parent: Any = model
    for part in path:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    return parent, last


def _swap(model: nn.Module, name: str, make: Callable[[Any], Any]) -> None:
    parent, key = _parent(model, name)
    if isinstance(parent, list):
        parent[int(key)] = make(parent[int(key)])
    else:
        setattr(parent, key, make(parent[key]))


def pack_model(
    model: nn.Module, tied: bool, matmul: str, between: Callable[[], None] | None = None
) -> int:
    """Replace the layers the kernels compute, one weight at a time: each is read, packed and
    its source dropped before the next (only names are held, not the modules). With ``EXACT``,
    only weights the kernels hold exactly: bfloat16 ones and affine-quantized ones; the rest
    stay MLX's (in float32). ``between`` runs before each weight (the load's call deadline).
    Returns how many modules were replaced."""
    swaps = [
        (name, make)
        for name, module in model.named_modules()
        if (make := _replacement(module, tied, matmul)) is not None
    ]
    for name, make in swaps:
        if between is not None:
            between()
        _swap(model, name, make)
    return len(swaps)
