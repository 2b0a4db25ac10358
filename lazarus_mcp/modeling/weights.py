"""What a checkpoint's weights are, from their safetensors headers alone, before anything loads.

mlx-lm builds the model object from config.json first and only then reads the weights, so a
config that lies (``num_hidden_layers: 100000`` beside the weights of 9 blocks) allocated 8 GB
and killed the process before the weights could disagree. Here the headers (a few KB each) are
read, checked against the files' sizes, and compared with the config's layer count, hidden size
and vocabulary; their byte count, as the load will convert them, is checked against the memory
budget. No MLX here.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lazarus_mcp.errors import ModelLoadError
from lazarus_mcp.modeling import model_config
from lazarus_mcp.modeling.families import FAMILIES, Names
from lazarus_mcp.modeling.safe_files import check_file, checkpoint_root, nesting_depth
from lazarus_mcp.runtime.limits import Limits, check_memory, current

MAX_HEADER_BYTES = 100 * 2**20
MAX_SHARDS = 1024
_ITEM_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
    "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_TOWER = re.compile(r"vision|visual|audio|encoder|mm_projector|multi_modal")
# A model outside the registry: its block list by the names registry families use, or these.
_OTHER_BLOCK_LISTS = ("blocks",)
_OTHER_LAYER_KEYS = ("num_layers",)


@dataclass(frozen=True)
class WeightsSummary:
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    stored_bytes: int
    num_layers: int  # blocks that have weights

    def loaded_bytes(self, bits: int | None) -> int:
        """Bytes once loaded, upper bound: floats converted to float32 (the CPU's compute
        dtype), packed quantized weights dequantized (32 / bits floats per 32-bit word)."""
        total = 0
        for name, shape in self.shapes.items():
            count = math.prod(shape)
            dtype = self.dtypes[name]
            if dtype == "U32" and bits:
                total += count * (32 // bits) * 4
            else:
                total += count * max(4, _ITEM_BYTES.get(dtype, 4))
        return total


def _fail(path: Path, detail: str) -> ModelLoadError:
    return ModelLoadError(f"could not load the model in {path.parent}: {path.name} {detail}")


def read_header(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _fail(path, "is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise _fail(path, "has a corrupt safetensors header (bad length)")
        raw = f.read(length)
    try:
        text = raw.decode("utf-8")
        if nesting_depth(text) > 8:
            raise ValueError("nested too deep")
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(path, "has a corrupt safetensors header") from exc
    if not isinstance(header, dict):
        raise _fail(path, "has a corrupt safetensors header")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise _fail(path, f"has a corrupt entry for {name[:80]!r}")
        shape: Any = entry.get("shape")
        dtype: Any = entry.get("dtype")
        offsets: Any = entry.get("data_offsets")
        ok = (
            isinstance(shape, list)
            and all(isinstance(d, int) and 0 <= d < 2**40 for d in shape)
            and isinstance(dtype, str)
            and dtype in _ITEM_BYTES
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        )
        if not ok:
            raise _fail(path, f"has a corrupt entry for {name[:80]!r}")
        begin, end = offsets
        if (
            not 0 <= begin <= end <= data_size
            or end - begin != math.prod(shape) * _ITEM_BYTES[dtype]
        ):
            raise _fail(path, f"is truncated or its header lies about {name[:80]!r}")
    return header


def _layer_pattern(names: Names | None) -> re.Pattern[str]:
    lists = names.block_lists if names else (*_registry_block_lists(), *_OTHER_BLOCK_LISTS)
    alternatives = "|".join(re.escape(name) for name in lists)
    return re.compile(rf"(?:^|\.)(?:{alternatives})\.(\d+)\.")


def _registry_block_lists() -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for spec in FAMILIES.values() for n in spec.names.block_lists))


def summarize(
    path: Path, limits: Limits | None = None, names: Names | None = None
) -> WeightsSummary:
    """The weights' shapes; ``names``: the family's (None: outside the registry)."""
    limits = limits or current()
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"could not load the model in {path}: no *.safetensors weights")
    if len(files) > MAX_SHARDS:
        raise ModelLoadError(f"could not load the model in {path}: more than {MAX_SHARDS} shards")
    root = checkpoint_root(path)
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    stored = 0
    for file in files:
        check_file(file, root, None)
        for name, entry in read_header(file).items():
            if name == "__metadata__":
                continue
            shapes[name] = tuple(entry["shape"])
            dtypes[name] = entry["dtype"]
            stored += entry["data_offsets"][1] - entry["data_offsets"][0]
    # A multimodal container's vision or audio tower has its own numbered layers.
    pattern = _layer_pattern(names)
    layers = {
        int(m.group(1))
        for name in shapes
        if (m := pattern.search(name)) and not _TOWER.search(name)
    }
    return WeightsSummary(shapes, dtypes, stored, max(layers) + 1 if layers else 0)


def _positive_int(config: dict[str, Any], key: str, path: Path) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise ModelLoadError(f"config.json in {path} has an invalid {key}: {str(value)[:40]!r}")
    return value


def _embedding(summary: WeightsSummary, names: Names | None) -> tuple[int, ...] | None:
    suffix = f"{names.embedding if names else 'embed_tokens'}.weight"
    for name, shape in summary.shapes.items():
        if (name == suffix or name.endswith("." + suffix)) and not _TOWER.search(name):
            return shape
    return None


def _key(names: Names | None, field: str, default: str) -> str:
    return str(getattr(names, field)) if names else default


def check_against_config(
    path: Path, config: dict[str, Any], summary: WeightsSummary, names: Names | None = None
) -> None:
    """The config's sizes match the weights' shapes (mlx-lm allocates from the config).

    ``names``: the family's config keys and embedding name (None: outside the registry)."""
    text = config.get("text_config")
    config = {**config, **text} if isinstance(text, dict) else config
    layer_keys = (names.layers,) if names else (*_registry_layer_keys(), *_OTHER_LAYER_KEYS)
    found = [_positive_int(config, key, path) for key in layer_keys if key in config]
    layers = found[0] if found else None
    if layers is None:
        raise ModelLoadError(f"config.json in {path} has no {layer_keys[0]}")
    # Fewer blocks in the weights than the config claims is the allocation bomb; more is normal
    # (DeepSeek's multi-token-prediction block is stored as one extra layer).
    if summary.num_layers and layers > summary.num_layers:
        raise ModelLoadError(
            f"config.json in {path} says {layers} layers but the weights hold "
            f"{summary.num_layers}; the checkpoint is inconsistent"
        )
    hidden_key = _key(names, "hidden", "hidden_size")
    hidden = _positive_int(config, hidden_key, path)
    vocab = _positive_int(config, "vocab_size", path)
    sizes = (
        _key(names, "intermediate", "intermediate_size"),
        _key(names, "heads", "num_attention_heads"),
    )
    for key in (*sizes, "num_key_value_heads", "head_dim"):
        _positive_int(config, key, path)
    embedding = _embedding(summary, names)
    if embedding is None or len(embedding) != 2:
        return
    rows, width = embedding
    if vocab is not None and rows != vocab:
        raise ModelLoadError(
            f"config.json in {path} says vocab_size {vocab} but the embedding has {rows} rows"
        )
    quantized = isinstance(config.get("quantization") or config.get("quantization_config"), dict)
    if hidden is not None and not quantized and width != hidden:
        raise ModelLoadError(
            f"config.json in {path} says {hidden_key} {hidden} but the embedding is {width} wide"
        )


def _registry_layer_keys() -> tuple[str, ...]:
    return tuple(dict.fromkeys(spec.names.layers for spec in FAMILIES.values()))


def _quantization_block(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for key in ("quantization", "quantization_config"):
        block = config.get(key)
        if isinstance(block, dict) and ("bits" in block or "group_size" in block):
            return key, block
    return None


def check_quantization(path: Path, config: dict[str, Any]) -> None:
    """The quantization block's numbers are what MLX can use (``"bits": "abc"`` reached
    ``int()`` after the load, a traceback; a missing ``group_size`` a bare KeyError)."""
    found = _quantization_block(config)
    if found is None:
        return
    key, block = found
    # mlx-lm's own format needs both; a transformers quantization_config may state either.
    required = ("bits", "group_size") if key == "quantization" else ()
    for name, low, high in (("bits", 1, 8), ("group_size", 1, 2**16)):
        value = block.get(name)
        if value is None and name not in required:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelLoadError(
                f"config.json in {path} has an invalid {key}: {name} must be an integer from "
                f"{low} to {high}, not {str(value)[:40]!r}"
            )
    mode = block.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise ModelLoadError(
            f"config.json in {path} has an invalid {key}: mode must be a string such as "
            f"'affine', not {str(mode)[:40]!r}"
        )


def check_weights(path: Path, config: dict[str, Any], limits: Limits | None = None) -> int:
    """Check the weights against the config and the memory budget; their loaded bytes."""
    limits = limits or current()
    check_quantization(path, config)
    names = model_config.names_and_text(config)[0]
    summary = summarize(path, limits, names)
    check_against_config(path, config, summary, names)
    quant = config.get("quantization") or config.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, dict) else None
    need = summary.loaded_bytes(bits if isinstance(bits, int) and 0 < bits <= 32 else None)
    check_memory("loading this model", need, limits)
    return need
