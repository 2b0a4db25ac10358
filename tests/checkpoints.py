"""Tiny checkpoints the tests build themselves: numpy weights, safetensors, a `tokenizers` BPE.

Parameter names come from mlx-lm's own model classes, so every family the lens supports can be
written in the layout mlx-lm (and Hugging Face) expects, without torch or a hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tests.family_configs import BASE_CONFIG, FAMILY_CONFIGS, family_config

__all__ = ["BASE_CONFIG", "FAMILY_CONFIGS", "build_checkpoint", "family_config", "random_weights"]

WORDS = (
    "The capital of France is Paris . The capital of Japan is Tokyo . Hello world ! "
    "one two three four five six seven eight nine ten 1 2 3 4 5 6 7 8 9 0 + = "
)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(directory: Path, chat_template: bool = True) -> int:
    """A byte-level BPE with <s>, </s>, <pad> and a BOS-adding post-processor; returns its size."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([WORDS] * 20, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
    }
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return tokenizer.get_vocab_size()


def random_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Weights named as mlx-lm's model class for this family names them (norms near 1).

    The class is built as lazarus builds it (the registry's config translation and build
    corrections), so the names and shapes are those of mlx-lm's converted layout."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    from lazarus_mcp.modeling.families import FAMILIES

    spec = FAMILIES.get(config["model_type"])
    built = {**config, **(spec.mlx_overrides(config) if spec else {})}
    model_class, args_class = _get_classes(built)
    model = model_class(args_class.from_dict(built))
    if spec is not None:
        spec.apply_build_fixes(model, config)
    rng = np.random.default_rng(seed)
    weights = {}
    text_type = (config.get("text_config") or config)["model_type"]
    zero_centered_norm = text_type.startswith("gemma")
    for name, value in tree_flatten(model.parameters()):
        shape = tuple(value.shape)
        if "norm" in name:
            base = 0.0 if zero_centered_norm else 1.0
            array = base + 0.1 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            array = 0.02 * rng.standard_normal(shape)
        else:
            array = rng.standard_normal(shape) / np.sqrt(shape[-1])
        weights[name] = array.astype(np.float32)
    return weights


def build_checkpoint(
    directory: Path,
    family: str = "llama",
    seed: int = 0,
    chat_template: bool = True,
    **overrides: Any,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(directory, chat_template=chat_template)
    config = family_config(family, vocab, **overrides)
    save_file(random_weights(config, seed), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
