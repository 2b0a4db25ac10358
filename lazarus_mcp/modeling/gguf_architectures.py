"""Which GGUF architectures lazarus reads, the registry family each one is, and how llama.cpp's
converter changed its tensors (what has to be undone to get the reference model back).

A GGUF file names its architecture (``general.architecture``: ``llama``, ``qwen2moe``,
``gemma3``...). Each entry maps one to a family of the registry (``families.py``), so a GGUF model
is built, corrected and verified like any checkpoint of that family. The config keys come from
transformers' own GGUF table (``gguf_config.py``); the tensor names from the ``gguf`` package's
name map, which knows llama.cpp's name for every Hugging Face one. What llama.cpp's
``convert_hf_to_gguf.py`` does beyond renaming is recorded here, as transformers' GGUF loader
undoes it:

- ``permute_qk``: Llama-style q/k projection rows reordered for its rotary layout (undone as a
  row permutation, so quantized rows stay quantized);
- ``norm_offset``: Gemma's norm weights stored with the 1 of ``(1 + w)`` added.

No MLX here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GGUFArchitecture:
    gguf_name: str
    model_type: str  # the registry family
    # The key of transformers' GGUF config table (GGUF_CONFIG_MAPPING), when it has one.
    config_table: str | None = None
    permute_qk: bool = False
    norm_offset: float = 0.0


ARCHITECTURES: dict[str, GGUFArchitecture] = {
    a.gguf_name: a
    for a in (
        GGUFArchitecture("llama", "llama", "llama", permute_qk=True),
        GGUFArchitecture("mistral", "mistral", "mistral"),
        GGUFArchitecture("qwen2", "qwen2", "qwen2"),
        GGUFArchitecture("qwen2moe", "qwen2_moe", "qwen2_moe"),
        GGUFArchitecture("qwen3", "qwen3", "qwen3"),
        GGUFArchitecture("qwen3moe", "qwen3_moe", "qwen3_moe"),
        GGUFArchitecture("phi3", "phi3", "phi3"),
        # transformers has no table for Gemma 1; Gemma 2's keys are the same (minus the window).
        GGUFArchitecture("gemma", "gemma", "gemma2", norm_offset=1.0),
        GGUFArchitecture("gemma2", "gemma2", "gemma2", norm_offset=1.0),
        GGUFArchitecture("gemma3", "gemma3_text", "gemma3", norm_offset=1.0),
        GGUFArchitecture("starcoder2", "starcoder2", "starcoder2"),
        GGUFArchitecture("gpt2", "gpt2", "gpt2"),
        GGUFArchitecture("stablelm", "stablelm", "stablelm"),
    )
}

# llama.cpp names Mistral models "llama"; transformers tells them apart by the model's name.
MISTRAL_BY_NAME = re.compile(r"mistral", re.IGNORECASE)


def architecture_of(gguf_arch: str, model_name: str) -> GGUFArchitecture | None:
    arch = ARCHITECTURES.get(gguf_arch)
    if arch is not None and gguf_arch == "llama" and MISTRAL_BY_NAME.search(model_name):
        # Same tensors as a llama file (permuted q/k too); only the family differs.
        return GGUFArchitecture("llama", "mistral", "mistral", permute_qk=True)
    return arch


_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.mlp\.switch_mlp\.(gate|up|down)_proj$")


def gguf_tensor_name(arch: GGUFArchitecture, num_layers: int, mlx_name: str) -> str | None:
    """The GGUF tensor name of one of mlx-lm's parameters (``blk.3.attn_q.weight``), or None."""
    base, _, suffix = mlx_name.rpartition(".")
    experts = _EXPERTS.match(base)
    if experts:  # mlx-lm stacks the experts as llama.cpp does; the gguf map knows only HF's
        return f"blk.{experts.group(1)}.ffn_{experts.group(2)}_exps.{suffix}"
    names = _name_map(arch.gguf_name, num_layers)
    for candidate in (base, "transformer." + base.removeprefix("model.")):
        found = names.get_name(candidate)
        if found is not None:
            return f"{found}.{suffix}"
    return None


@functools.lru_cache(maxsize=16)
def _name_map(gguf_arch: str, num_layers: int) -> Any:
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next(k for k, v in MODEL_ARCH_NAMES.items() if v == gguf_arch)
    return get_tensor_name_map(arch, num_layers)


def qk_row_order(rows: int, heads: int) -> np.ndarray:
    """The row order that undoes llama.cpp's rotary permutation of a q or k projection
    (``rows`` = heads * head_dim): within each head, its converter interleaved the two halves."""
    head_dim = rows // heads
    return np.arange(rows).reshape(heads, head_dim // 2, 2).swapaxes(1, 2).reshape(-1)
