"""Building a model from one GGUF file through the family registry.

The header is read and checked first (``gguf_header.py``), then the config and tokenizer come
from its metadata (``gguf_config.py``), and its memory estimate is checked against the budget:
all before MLX allocates anything. The model is then built by mlx-lm's class of the registry
family with the family's build corrections, as a safetensors checkpoint is; the layers whose
GGUF weights are Q4_0, Q4_1 or Q8_0 are made MLX-quantized (affine, groups of 32, each layer at
its own bits), and the weights are mapped from llama.cpp's names, with its converter's changes
undone (``gguf_architectures.py``). Runs on the MLX worker thread.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import ModelLoadError
from lazarus_mcp.modeling import gguf_config
from lazarus_mcp.modeling.families import FAMILIES, FamilySpec
from lazarus_mcp.modeling.gguf_architectures import GGUFArchitecture, gguf_tensor_name, qk_row_order
from lazarus_mcp.modeling.gguf_header import GGUFHeader, read_header
from lazarus_mcp.modeling.gguf_weights import GROUP, QUANTIZED_BITS, load_tensors
from lazarus_mcp.runtime.limits import check_interrupt, check_memory

_LAYER_KEYS = ("num_hidden_layers", "n_layer")


def is_gguf(path: Path) -> bool:
    """A resolved model path is a checkpoint directory or a GGUF file (``checkpoint.py``): a
    hub blob has no suffix, and anything else that is not a directory is refused by the header
    reader as not a regular file."""
    return not path.is_dir()


@dataclass
class GGUFModel:
    model: Any
    config: dict[str, Any]
    tokenizer: Any
    spec: FamilySpec
    header: GGUFHeader


def dequantized_dtype(dtype_option: str, device: str) -> Any:
    """The dtype K-quants (and other types MLX does not compute) are dequantized into."""
    if dtype_option in ("float32", "bfloat16", "float16"):
        return getattr(mx, dtype_option)
    return mx.float32 if device == "cpu" else mx.float16


def loaded_bytes(header: GGUFHeader, itemsize: int, quantized_extra: int = 8) -> int:
    """Bytes the model holds once loaded: Q4_0/Q4_1/Q8_0 as MLX codes plus ``quantized_extra``
    bytes of scale and bias per group of 32, everything else dequantized at ``itemsize``."""
    total = 0
    for info in header.tensors.values():
        count = math.prod(info.shape)
        bits = QUANTIZED_BITS.get(info.type_name)
        if bits is None:
            total += count * itemsize
        else:
            total += count * bits // 8 + count // GROUP * quantized_extra
    return total


def quantization_of(header: GGUFHeader) -> dict[str, Any] | None:
    """The config's ``quantization`` for the tensors that stay quantized: the bits of most."""
    bits = Counter(
        QUANTIZED_BITS[t.type_name]
        for t in header.tensors.values()
        if t.type_name in QUANTIZED_BITS
    )
    if not bits:
        return None
    return {"group_size": GROUP, "bits": bits.most_common(1)[0][0], "mode": "affine"}


def _check_layers(header: GGUFHeader, config: dict[str, Any]) -> None:
    layers = next((config[k] for k in _LAYER_KEYS if isinstance(config.get(k), int)), None)
    blocks = {int(n.split(".")[1]) for n in header.tensors if n.startswith("blk.")}
    held = max(blocks) + 1 if blocks else 0
    if layers is None or not 0 < layers <= held:
        raise ModelLoadError(
            f"the GGUF file {header.path.name[:120]} says {layers} blocks but holds the "
            f"tensors of {held}; the file is inconsistent"
        )


def read(path: Path, memory_need: Any) -> tuple[GGUFHeader, dict[str, Any]]:
    """The checked header and the config; ``memory_need(header)`` checked against the budget."""
    header = read_header(path)
    if not header.tensors:
        raise ModelLoadError(f"the GGUF file {path.name[:120]} holds no tensors")
    parts = header.metadata.get("split.count")
    if isinstance(parts, int) and parts > 1:
        raise ModelLoadError(
            f"the GGUF file {path.name[:120]} is one of {parts} parts of a split model; merge "
            "them first (llama-gguf-split --merge FIRST_PART OUT.gguf)"
        )
    config = gguf_config.hf_config(header)
    _check_layers(header, config)
    check_memory("loading this model", memory_need(header))
    quantization = quantization_of(header)
    if quantization is not None:
        config["quantization"] = quantization
    return header, config


def _permute_rows(value: mx.array, heads: int) -> mx.array:
    return mx.take(value, mx.array(qk_row_order(value.shape[0], heads)), axis=0)


def _undo_converter(
    arch: GGUFArchitecture, config: dict[str, Any], name: str, value: mx.array
) -> mx.array:
    """The tensor as the Hugging Face checkpoint held it (see gguf_architectures)."""
    if arch.permute_qk and (".attn_q." in name or ".attn_k." in name):
        heads = int(config["num_attention_heads"])
        if ".attn_k." in name:
            heads = int(config.get("num_key_value_heads") or heads)
        return _permute_rows(value, heads)
    if arch.norm_offset and name.endswith("norm.weight"):
        return value - arch.norm_offset
    return value


def _module_bits(model: nn.Module, names: dict[str, str], tensors: dict[str, mx.array]) -> dict:  # type: ignore[type-arg]
    """{module path: bits} for the modules whose GGUF weight is quantized."""
    from mlx.utils import tree_flatten

    shapes = dict(tree_flatten(model.parameters()))
    out: dict[str, int] = {}
    for mlx_name, gguf_name in names.items():
        if not mlx_name.endswith(".weight"):
            continue
        base = gguf_name.removesuffix(".weight")
        packed = tensors.get(base + ".weight")
        if base + ".scales" in tensors and packed is not None:
            columns = int(shapes[mlx_name].shape[-1])
            out[mlx_name.removesuffix(".weight")] = 32 * int(packed.shape[-1]) // columns
    return out


def _name_map(arch: GGUFArchitecture, config: dict[str, Any], model: nn.Module) -> dict[str, str]:
    from mlx.utils import tree_flatten

    layers = next(int(config[k]) for k in _LAYER_KEYS if isinstance(config.get(k), int))
    names: dict[str, str] = {}
    for mlx_name, _ in tree_flatten(model.parameters()):
        gguf_name = gguf_tensor_name(arch, layers, mlx_name)
        if gguf_name is not None:
            names[mlx_name] = gguf_name
    return names


class ExactQuantizedEmbedding(nn.QuantizedEmbedding):
    """A quantized embedding whose lookups are dequantized in float32.

    MLX's returns them in its scales' dtype: GGUF's float16 scales round the residual stream's
    first state (|Δp| ~1e-4 at the last block against transformers' float32 dequantization).
    Widening only the looked-up rows' scales is exact and costs no memory."""

    def __call__(self, x: mx.array) -> mx.array:
        return mx.dequantize(
            self["weight"][x],
            scales=self["scales"][x].astype(mx.float32),
            biases=self["biases"][x].astype(mx.float32),
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
        )


def _embedding_in(model: nn.Module, dtype: Any) -> None:
    if dtype != mx.float32:
        return
    for _, module in model.named_modules():
        if type(module) is nn.QuantizedEmbedding and module.get("biases") is not None:
            module.__class__ = ExactQuantizedEmbedding


def build(
    header: GGUFHeader, config: dict[str, Any], classes: Any, dtype: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """The registry family's model, with the file's weights (quantized where they are)."""
    arch = gguf_config.architecture(header)
    spec = FAMILIES[arch.model_type]
    config = {**config, **spec.mlx_overrides(config)}
    model_class, args_class = classes(config)
    model = model_class(args_class.from_dict(config))
    mx.eval(mx.random.state)  # see loading._load: the discarded initial weights' key
    tensors = load_tensors(header, dtype)
    names = _name_map(arch, config, model)
    bits = _module_bits(model, names, tensors)
    if bits:
        nn.quantize(
            model,
            class_predicate=lambda path, _: (
                {"group_size": GROUP, "bits": bits[path], "mode": "affine"}
                if path in bits
                else False
            ),
        )
    weights = []
    missing = []
    from mlx.utils import tree_flatten

    for mlx_name, expected in tree_flatten(model.parameters()):
        module, _, part = mlx_name.rpartition(".")
        gguf_name = names.get(f"{module}.weight" if part in ("scales", "biases") else mlx_name)
        if gguf_name is None:
            missing.append(mlx_name)
            continue
        if part in ("scales", "biases"):
            gguf_name = gguf_name.removesuffix(".weight") + "." + part
        value = tensors.get(gguf_name)
        if value is None:
            missing.append(gguf_name)
            continue
        value = _undo_converter(arch, config, gguf_name, value)
        if value.shape != expected.shape and value.size == expected.size and part == "weight":
            # llama.cpp drops unit dimensions (Qwen2-MoE's shared-expert gate is stored 1-D).
            value = value.reshape(expected.shape)
        weights.append((mlx_name, value))
    if missing:
        raise ModelLoadError(
            f"the GGUF file {header.path.name[:120]} lacks tensors the {arch.model_type} model "
            f"needs: {', '.join(m[:60] for m in missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    try:
        model.load_weights(weights, strict=True)
    except ValueError as exc:
        raise ModelLoadError(
            f"the GGUF file {header.path.name[:120]} does not fit its config: {exc}".splitlines()[
                0
            ][:400]
        ) from exc
    _embedding_in(model, dtype)
    for _, value in tree_flatten(model.parameters()):
        check_interrupt()  # the call's deadline, between tensors (a load is part of its call)
        mx.eval(value)
    del tensors, weights
    mx.clear_cache()
    return model, config
