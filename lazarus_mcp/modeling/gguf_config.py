"""A GGUF file's config and tokenizer, from its (already checked) metadata, as transformers reads
them.

transformers' GGUF support (``from_pretrained(..., gguf_file=)``) reads the file with its own
reader, which imports torch and trusts the header; lazarus needs neither. So the metadata comes
from ``gguf_header.py`` and goes through transformers' own tables: its GGUF config map
(``GGUF_CONFIG_MAPPING``, with the same architecture fixes as its loader: Mistral told by name,
tied embeddings when there is no ``output.weight``, StableLM's bias and residual flags) and its
GGUF tokenizer builders (vocabulary, merges, special tokens, pre-tokenizer split, chat template,
BOS/EOS). The result is the config a ``config.json`` would hold, filled with the config class's
defaults, so the family registry reads it as it reads any checkpoint. No MLX here.
"""

from __future__ import annotations

from typing import Any

from lazarus_mcp.errors import ModelLoadError, UnsupportedModelError
from lazarus_mcp.modeling.gguf_architectures import ARCHITECTURES, GGUFArchitecture, architecture_of
from lazarus_mcp.modeling.gguf_header import GGUFHeader


def architecture(header: GGUFHeader) -> GGUFArchitecture:
    name = header.architecture
    arch = architecture_of(name, str(header.metadata.get("general.name", "")))
    if arch is None:
        raise UnsupportedModelError(
            f"unsupported GGUF architecture '{name[:80]}': lazarus reads "
            f"{', '.join(sorted(ARCHITECTURES))}"
        )
    return arch


# Keys llama.cpp writes that transformers' table drops (its loader then builds the model with
# the config class's defaults, e.g. Qwen2-MoE's expert width 1408 whatever the file says).
EXTRA_KEYS: dict[str, dict[str, str]] = {
    "qwen2_moe": {
        "expert_feed_forward_length": "moe_intermediate_size",
        "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    },
    "qwen3": {"attention.key_length": "head_dim"},
    "qwen3_moe": {"expert_feed_forward_length": "moe_intermediate_size"},
    "gemma2": {
        "attn_logit_softcapping": "attn_logit_softcapping",
        "final_logit_softcapping": "final_logit_softcapping",
    },
    "starcoder2": {"rope.freq_base": "rope_theta"},
    "stablelm": {"rope.freq_base": "rope_theta"},
    "gpt2": {"context_length": "n_positions"},
}


def _raw_config(header: GGUFHeader, arch: GGUFArchitecture) -> dict[str, Any]:
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    tables = (
        GGUF_CONFIG_MAPPING[arch.config_table or arch.model_type],
        EXTRA_KEYS.get(arch.model_type, {}),
    )
    tokenizer_table = GGUF_CONFIG_MAPPING["tokenizer"]
    prefix = header.architecture + "."
    config: dict[str, Any] = {}
    for key, value in header.metadata.items():
        if key.startswith(prefix):
            targets = [table.get(key[len(prefix) :]) for table in tables]
        elif key.startswith("tokenizer."):
            targets = [tokenizer_table.get(key.removeprefix("tokenizer."))]
        else:
            continue
        for target in targets:
            if target:
                config[target] = value
    config["tie_word_embeddings"] = "output.weight" not in header.tensors
    for key, value in GGUF_CONFIG_DEFAULTS_MAPPING.get(arch.model_type, {}).items():
        config.setdefault(key, value)
    if arch.model_type == "stablelm":
        # The file has no flags for these: its tensors show them.
        names = header.tensors
        config["use_qkv_bias"] = any(n.endswith("attn_q.bias") for n in names)
        config["use_parallel_residual"] = not any(".ffn_norm." in n for n in names)
    if "vocab_size" not in config and isinstance(
        header.metadata.get("tokenizer.ggml.tokens"), list
    ):
        config["vocab_size"] = len(header.metadata["tokenizer.ggml.tokens"])
    return config


def hf_config(header: GGUFHeader) -> dict[str, Any]:
    """The transformers config of the model in the file, as a ``config.json`` would hold it."""
    from transformers import AutoConfig

    arch = architecture(header)
    raw = _raw_config(header, arch)
    try:
        config = AutoConfig.for_model(arch.model_type, **raw).to_dict()
    except Exception as exc:
        raise ModelLoadError(
            f"could not read the config of the GGUF file {header.path.name[:120]}: {exc}"
        ).with_traceback(None) from exc
    config["model_type"] = arch.model_type
    return config


_SPECIAL = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}


def tokenizer(header: GGUFHeader) -> Any:
    """The file's tokenizer, as transformers builds it from GGUF metadata (chat template, BOS
    and EOS included)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    meta = header.metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelLoadError(
            f"the GGUF file {header.path.name[:120]} has no tokenizer (tokenizer.ggml.tokens)"
        )
    groups = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }  # fmt: skip
    tokenizer_dict, tokenizer_config = groups["tokenizer"], groups["tokenizer_config"]
    if tokenizer_dict.get("tokenizer_type") == "llama":
        tokenizer_config.setdefault("add_bos_token", True)
    for name, key in _SPECIAL.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        valid = isinstance(token_id, int) and 0 <= token_id < len(tokens)
        tokenizer_config[name] = tokens[token_id] if valid and token_id is not None else None
    try:
        backend, extra = convert_gguf_tokenizer(header.architecture, tokenizer_dict)
        return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)
    except Exception as exc:
        raise ModelLoadError(
            f"could not build the tokenizer of the GGUF file {header.path.name[:120]}: "
            f"{exc}".splitlines()[0][:400]
        ) from exc
