"""Tiny GGUF files the tests write themselves, as llama.cpp's converter would, with the ``gguf``
package's writer.

The metadata is the family's test config written under llama.cpp's keys (transformers' GGUF
table read backwards, plus the keys it drops that lazarus reads); the tokenizer is the tests'
byte-level BPE as a ``gpt2`` GGUF vocabulary; the weights are random, named as llama.cpp names
them, with its converter's changes made (q/k rows permuted for Llama, Gemma's norms + 1).

Quantization: Q8_0, Q4_0 and Q4_1 by the ``gguf`` package's own numpy quantizers. It has none
for the K-quants (it only dequantizes them), so a K-quant tensor is written as random blocks
with scales chosen to give weights of the usual size; every reader dequantizes the same blocks,
which is what the comparison needs. Rows that are not whole blocks stay F32 (llama.cpp too
falls back to another type there).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from tests.checkpoints import CHAT_TEMPLATE, build_tokenizer, random_weights
from tests.family_configs import family_config

GGUF_ARCH = {
    "llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3", "qwen3_moe": "qwen3moe", "phi3": "phi3", "gemma": "gemma",
    "gemma2": "gemma2", "gemma3_text": "gemma3", "starcoder2": "starcoder2", "gpt2": "gpt2",
    "stablelm": "stablelm",
}  # fmt: skip
FAMILIES = tuple(GGUF_ARCH)
QTYPES = ("F32", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")
# The K-quant each family is tested in (both kinds covered across the families).
K_QUANT = {family: ("Q4_K" if i % 2 == 0 else "Q6_K") for i, family in enumerate(FAMILIES)}

# K-quant blocks are 256 wide: those files are written 256 wide.
WIDE: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 256,
    "head_dim": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "moe_intermediate_size": 256,
    "shared_expert_intermediate_size": 256,
}
WIDE_GPT2 = {"n_embd": 256, "n_layer": 2, "n_head": 4}
# transformers' defaults for what llama.cpp does not write, so both readers build the same model.
GGUF_COMPATIBLE: dict[str, dict[str, Any]] = {
    "gpt2": {"n_positions": 128, "n_ctx": 128},
    "mistral": {"sliding_window": None},
    "gemma2": {"query_pre_attn_scalar": 256, "sliding_window": 4096},
    "gemma3_text": {"query_pre_attn_scalar": 256, "sliding_window": 4096},
    "starcoder2": {"sliding_window": None},
    "phi3": {"sliding_window": None},
}


def _ints_and_floats(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metadata(family: str, config: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's metadata keys for a transformers config (without the tokenizer)."""
    from transformers import AutoConfig
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from lazarus_mcp.modeling.gguf_architectures import architecture_of
    from lazarus_mcp.modeling.gguf_config import EXTRA_KEYS

    arch = GGUF_ARCH[family]
    spec = architecture_of(arch, "Mistral-tiny" if family == "mistral" else "tiny")
    assert spec is not None
    full = AutoConfig.for_model(family, **{k: v for k, v in config.items() if k != "model_type"})
    values = full.to_dict()
    rope = values.get("rope_parameters") or {}
    values.setdefault("rope_theta", rope.get("rope_theta"))
    values["rope_theta"] = values["rope_theta"] or rope.get("rope_theta")
    values.setdefault("partial_rotary_factor", rope.get("partial_rotary_factor"))
    values["num_experts"] = values.get("num_experts") or values.get("num_local_experts")
    tables = (GGUF_CONFIG_MAPPING[spec.config_table or family], EXTRA_KEYS.get(family, {}))
    out: dict[str, Any] = {}
    for key, target in [item for table in tables for item in table.items()]:
        value = values.get(target) if target else None
        if target == "head_dim" and value is None:
            value = values["hidden_size"] // values["num_attention_heads"]
        if _ints_and_floats(value) and target != "vocab_size":
            out[f"{arch}.{key}"] = value
    if family == "stablelm":
        head_dim = values["hidden_size"] // values["num_attention_heads"]
        out[f"{arch}.rope.dimension_count"] = int(head_dim * values["partial_rotary_factor"])
    if family == "llama" or family == "mistral":
        out[f"{arch}.rope.dimension_count"] = values.get("head_dim") or (
            values["hidden_size"] // values["num_attention_heads"]
        )
    out["general.name"] = "Mistral-tiny" if family == "mistral" else f"tiny-{family}"
    return out


def _tokenizer_metadata(directory: Path) -> dict[str, Any]:
    data = json.loads((directory / "tokenizer.json").read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in data.get("added_tokens", []) if a.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if t in special else 1 for t in tokens],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.padding_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }


def _k_blocks(shape: tuple[int, ...], qtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks whose dequantized weights have a spread of ~1/sqrt(row)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[qtype]
    rows = int(np.prod(shape[:-1]))
    n = shape[-1] // block
    raw = rng.integers(0, 256, size=(rows, n, size), dtype=np.uint8)
    target = 1.0 / np.sqrt(shape[-1])
    if qtype == GGMLQuantizationType.Q6_K:  # ... scales: int8[16], d: f16 (the block's end)
        raw[..., -2:] = np.full((rows, n, 1), target / (64 * 32), np.float16).view(np.uint8)
    else:  # Q4_K / Q5_K / Q2_K... start with d and dmin (f16)
        raw[..., 0:2] = np.full((rows, n, 1), target / (32 * 8), np.float16).view(np.uint8)
        raw[..., 2:4] = np.full((rows, n, 1), target / 8, np.float16).view(np.uint8)
    return raw.reshape(*shape[:-1], n * size)


def _stored(array: np.ndarray, qtype_name: str, rng: np.random.Generator) -> tuple[Any, Any]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quantize

    qtype = GGMLQuantizationType[qtype_name]
    block = GGML_QUANT_SIZES[qtype][0]
    if qtype_name == "F32" or array.ndim < 2 or array.shape[-1] % block:
        return array.astype(np.float32), None
    if qtype_name in ("Q8_0", "Q4_0", "Q4_1"):
        return quantize(array.astype(np.float32), qtype), qtype
    return _k_blocks(array.shape, qtype, rng), qtype


def _llama_permute(w: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def tiny_config(family: str, vocab: int, wide: bool) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(GGUF_COMPATIBLE.get(family, {}))
    if wide:
        overrides.update(WIDE_GPT2 if family == "gpt2" else WIDE)
    if family == "gemma3_text":
        # mlx-lm's port needs a whole period of its default pattern (5 sliding, 1 global).
        overrides.update({"layer_types": None, "rope_parameters": None, "rope_theta": 1e6})
        overrides.update({"num_hidden_layers": 6, "sliding_window_pattern": 6})
    config = family_config(family, vocab, **overrides)
    if family not in ("qwen2_moe", "qwen3_moe"):
        config.pop("moe_intermediate_size", None)
        config.pop("shared_expert_intermediate_size", None)
    return config


def write_gguf(
    directory: Path,
    family: str,
    qtype: str,
    seed: int = 0,
    by_name: dict[str, str] | None = None,
    wide: bool | None = None,
) -> Path:
    """A tiny GGUF file of the family in ``qtype``. ``by_name``: another type for the tensors
    whose GGUF name matches the regular expression (llama.cpp keeps ``output.weight`` in Q6_K
    in a Q4_0 file). K-quant files are written 256 wide (``wide``)."""
    import gguf

    from lazarus_mcp.modeling.gguf_architectures import architecture_of, gguf_tensor_name

    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(directory)
    config = tiny_config(family, vocab, wide=qtype.endswith("_K") if wide is None else wide)
    meta = metadata(family, config)
    arch = architecture_of(GGUF_ARCH[family], meta["general.name"])
    assert arch is not None
    layers = int(config.get("num_hidden_layers") or config["n_layer"])
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 0)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    rng = np.random.default_rng(seed + 1)
    path = directory / f"tiny-{family}-{qtype}.gguf"
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH[family])
    for key, value in {**meta, **_tokenizer_metadata(directory)}.items():
        _add(writer, key, value)
    file_type = {"F32": 0, "Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q4_K": 15, "Q6_K": 18}[qtype]
    writer.add_uint32("general.file_type", file_type)
    for name, array in random_weights(config, seed).items():
        gguf_name = gguf_tensor_name(arch, layers, name)
        assert gguf_name is not None, name
        if arch.permute_qk and ".attn_q." in gguf_name:
            array = _llama_permute(array, heads)
        elif arch.permute_qk and ".attn_k." in gguf_name:
            array = _llama_permute(array, kv_heads)
        if ".ffn_gate_inp_shexp." in gguf_name:  # llama.cpp keeps Qwen2-MoE's (1, n) gate 1-D
            array = array.reshape(-1)
        if arch.norm_offset and gguf_name.endswith("norm.weight"):
            array = array + arch.norm_offset
        chosen = next((t for key, t in (by_name or {}).items() if re.search(key, gguf_name)), qtype)
        data, raw_type = _stored(array, chosen, rng)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add(writer: Any, key: str, value: Any) -> None:
    import gguf

    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list) and value and isinstance(value[0], int):
        writer.add_key_value(
            key, value, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32
        )
    else:
        writer.add_array(key, value)
