"""transformers builds a family's tiny checkpoint and computes its logit lens (needs torch).

Shared by tests/test_torch_families.py and examples/family_parity.py. The reference lens of
block i < N-1 is the model's final norm -> output embedding -> the family's output transform
(Cohere's ``logit_scale``, Granite's ``logits_scaling``, the final soft-cap); block N-1 is the
model's own logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.checkpoints import build_tokenizer
from tests.family_configs import family_config

PROMPT = "The capital of France is Paris . The capital of Japan is"
NORMS = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "embedding_norm")  # LFM2: its last

# Tiny vision towers for the multimodal containers (never run: the prompts are text only).
VISION: dict[str, dict[str, Any]] = {
    "gemma3": {
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        "mm_tokens_per_image": 4,
        "boi_token_index": 3,
        "eoi_token_index": 4,
        "image_token_index": 4,
    },
    "mistral3": {
        "vision_config": {
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 8,
            "image_size": 28,
            "patch_size": 14,
        },
        "image_token_index": 4,
        "spatial_merge_size": 1,
    },
    "llama4": {
        "vision_config": {
            "model_type": "llama4_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "vision_output_dim": 16,
            "projector_input_dim": 16,
            "projector_output_dim": 64,
        },
        "image_token_index": 4,
        "boi_token_index": 3,
        "eoi_token_index": 4,
    },
}


def build_with_transformers(directory: Path, family: str, seed: int = 0) -> Any:
    """A random transformers model of the family's test config, saved in its own layout."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(directory)
    config = family_config(family, vocab)
    config.update(VISION.get(family, {}))
    model_type = config.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **config)
    torch.manual_seed(seed)
    auto = AutoModelForImageTextToText if "vision_config" in config else AutoModelForCausalLM
    model = auto.from_config(hf_config, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))
            elif "norm" in name or "ln" in name:
                base = 0.0 if model_type.startswith("gemma") else 1.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(directory)
    return model


def _decoder_norm(model: Any) -> Any:
    decoder = model.get_decoder()
    decoder = getattr(decoder, "language_model", decoder)
    if not any(hasattr(decoder, n) for n in NORMS):
        decoder = decoder.model
    return next(getattr(decoder, n) for n in NORMS if hasattr(decoder, n))


def reference_lens(model: Any, input_ids: list[int]) -> list[np.ndarray]:
    """Log-probabilities (float64) of every block's lens at the last position."""
    import torch

    inner = getattr(model, "language_model", None)
    if inner is not None and hasattr(inner, "lm_head"):
        model = inner  # Llama 4's container holds a whole causal LM (its forward needs images)
    text = model.config.get_text_config()
    with torch.no_grad():
        out = model(torch.tensor([input_ids]), output_hidden_states=True)
        hidden = out.hidden_states
        n = len(hidden) - 1
        norm, head = _decoder_norm(model), model.get_output_embeddings()
        rows = []
        for i in range(n):
            if i == n - 1:
                logits = out.logits[0, -1]
            else:
                logits = head(norm(hidden[i + 1][:, -1]))[0]
                if getattr(text, "logit_scale", None):
                    logits = logits * text.logit_scale
                if getattr(text, "logits_scaling", None):
                    logits = logits / text.logits_scaling
                cap = getattr(text, "final_logit_softcapping", None)
                if cap:
                    logits = torch.tanh(logits / cap) * cap
            rows.append(torch.log_softmax(logits.double(), -1).numpy())
    return rows


def chat_ids(directory: Path, prompt: str) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def raw_ids(directory: Path, prompt: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(directory)(prompt).input_ids)


def config_of(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "config.json").read_text()))
