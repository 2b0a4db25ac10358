"""A GGUF file's tensors as MLX arrays under their GGUF names, quantized where MLX can compute
them.

Q4_0, Q4_1 and Q8_0 are MLX affine quantization with groups of 32 (Q4_0: scale d, bias -8d;
Q4_1: scale d, bias m; Q8_0: scale d, bias -128d over unsigned codes), so they stay quantized:
a quantized tensor comes back as ``name.weight`` (packed codes), ``name.scales`` and
``name.biases``, which is what ``mx.load`` returns for such files. Where every tensor is of a type
MLX reads (F32, F16, BF16, Q4_0, Q4_1, Q8_0), ``mx.load`` reads the file (0.6 s for the 98 MB
SmolLM2 file). Otherwise (``mx.load`` refuses the whole file when one tensor is a K-quant) each
tensor is read here from a memory map: those three types repacked in numpy into the same MLX
layout, K-quants and the rest dequantized by the ``gguf`` package into the wanted dtype, one
tensor at a time. The header has been checked (``gguf_header.py``) before either reads a byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import numpy as np

from lazarus_mcp.modeling.gguf_header import GGUFHeader, TensorInfo

GROUP = 32
NATIVE = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"})
QUANTIZED_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
FLOATS = {"F32": np.float32, "F16": np.float16}


def mlx_reads_all(header: GGUFHeader) -> bool:
    return all(t.type_name in NATIVE for t in header.tensors.values())


def _packed(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (uint8, rows x k) packed as MLX packs them: little-endian in uint32 words."""
    if bits == 4:
        codes = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(codes).view(np.uint32)


def _affine(info: TensorInfo, raw: np.ndarray) -> dict[str, np.ndarray]:
    """A Q4_0 / Q4_1 / Q8_0 tensor's blocks as MLX affine arrays (weight, scales, biases)."""
    rows = int(np.prod(info.shape[:-1]))
    blocks = raw.reshape(rows, info.shape[-1] // GROUP, -1)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0]
    if info.type_name == "Q8_0":
        codes = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        bias = (-128.0 * d.astype(np.float32)).astype(np.float16)
    else:
        start = 2 if info.type_name == "Q4_0" else 4
        qs = blocks[..., start:]
        # A block's first 16 values are the low nibbles of its 16 bytes, the next 16 the high.
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
        if info.type_name == "Q4_0":
            bias = (-8.0 * d.astype(np.float32)).astype(np.float16)
        else:
            bias = blocks[..., 2:4].copy().view(np.float16)[..., 0]
    packed = _packed(codes.reshape(rows, -1), QUANTIZED_BITS[info.type_name])
    lead = info.shape[:-1]
    return {
        "weight": packed.reshape(*lead, -1),
        "scales": d.reshape(*lead, -1),
        "biases": bias.reshape(*lead, -1),
    }


def _dequantized(info: TensorInfo, raw: np.ndarray) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    if info.type_name in FLOATS:
        return raw.view(FLOATS[info.type_name]).reshape(info.shape)
    if info.type_name == "BF16":
        widened = raw.view(np.uint16).astype(np.uint32) << 16
        return widened.view(np.float32).reshape(info.shape)
    qtype = GGMLQuantizationType(info.type_id)
    return np.asarray(dequantize(raw.reshape(*info.shape[:-1], -1), qtype)).reshape(info.shape)


def _numpy_tensors(header: GGUFHeader, dtype: Any) -> Iterator[tuple[str, mx.array]]:
    data = np.memmap(header.path, dtype=np.uint8, mode="r")
    for name, info in header.tensors.items():
        raw = data[info.offset : info.offset + info.nbytes]
        base = name.removesuffix(".weight")
        if info.type_name in QUANTIZED_BITS:
            for part, array in _affine(info, raw).items():
                yield f"{base}.{part}", mx.array(array)
        else:
            yield name, mx.array(_dequantized(info, raw)).astype(dtype)


def load_tensors(header: GGUFHeader, dtype: Any) -> dict[str, mx.array]:
    """Every tensor of the file under its GGUF name (quantized ones split in three, see the
    module docstring); what is not kept quantized in ``dtype``."""
    if mlx_reads_all(header):
        read: Any = mx.load(str(header.path), return_metadata=True)
        loaded: dict[str, mx.array] = read[0]
        return {
            name: value if not mx.issubdtype(value.dtype, mx.floating) or name.endswith(
                (".scales", ".biases")) or _is_packed(name, loaded) else value.astype(dtype)
            for name, value in loaded.items()
        }  # fmt: skip
    out: dict[str, mx.array] = {}
    for name, array in _numpy_tensors(header, dtype):
        mx.eval(array)  # read now: the memory map's pages are dropped as it goes
        out[name] = array
    return out


def _is_packed(name: str, loaded: dict[str, mx.array]) -> bool:
    return name.endswith(".weight") and name.removesuffix(".weight") + ".scales" in loaded
