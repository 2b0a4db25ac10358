"""The family registry holds each architecture's names (issue 15, item 8): config keys for the
context, heads, layers and widths, the checkpoint's block-list name, and the embedding, final
norm and head modules. What reads them (the request limits, the weights check, the lens head)
reads them through the registry, so a family with its own names is checked like every other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.analyses.attribution import attribute_loaded
from lazarus_mcp.errors import ModelLoadError, UnsupportedModelError
from lazarus_mcp.lens.head import backbone, unembedding_module
from lazarus_mcp.modeling import model_config
from lazarus_mcp.modeling.families import FAMILIES
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.runtime import gate, worker
from lazarus_mcp.runtime.limits import LimitExceededError
from lazarus_mcp.schema import AnalysisConfig, AttributionConfig
from tests.checkpoints import FAMILY_CONFIGS, build_checkpoint, family_config

LONG_PROMPT = " ".join(["one two three four five"] * 16)  # 80 words, over 80 tokens


def test_gpt2_refuses_a_prompt_past_its_position_table(tmp_path: Path) -> None:
    """n_positions=32: an 80-token prompt would read wpe out of range; the one gate every tool
    and interface passes refuses it in one line, before any forward."""
    path = build_checkpoint(tmp_path / "gpt2", "gpt2", n_positions=32)
    loaded = worker.run_sync(load, str(path))
    assert loaded.context_length == 32
    assert loaded.num_heads == 4
    with pytest.raises(LimitExceededError, match="context is 32") as caught:
        gate.admit([loaded], gate.Request("lens", [LONG_PROMPT], AnalysisConfig()))
    assert "\n" not in str(caught.value)
    # Inside the table it is admitted and answered.
    gate.admit([loaded], gate.Request("lens", ["one two three"], AnalysisConfig()))
    result = worker.run_sync(analyze_loaded, loaded, "one two three", AnalysisConfig())
    assert result.layer_predictions and result.fidelity.max_abs_prob_diff <= 1e-5


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_accessors_read_each_familys_own_keys(family: str) -> None:
    config = family_config(family, 300)
    text = config.get("text_config") or config
    names = model_config.names_and_text(config)[0]
    assert names is not None
    assert model_config.context_length(config) == text[names.context[0]]
    assert model_config.num_heads(config) == text[names.heads]
    assert model_config.num_layers(config) == text[names.layers]
    assert model_config.hidden_size(config) == text[names.hidden]


def test_a_model_outside_the_registry_is_read_by_any_registry_key() -> None:
    config = {"model_type": "not_in_registry", "n_positions": 77, "n_head": 3}
    assert model_config.context_length(config) == 77
    assert model_config.num_heads(config) == 3
    assert model_config.context_length({"model_type": "x"}) is None


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi", "lfm2", "llama"])
def test_the_registry_names_the_modules_the_port_has(tmp_path: Path, family: str) -> None:
    path = build_checkpoint(tmp_path / family, family)
    loaded = worker.run_sync(load, str(path))
    names = FAMILIES[family].names
    inner = backbone(loaded.model)
    assert names.embedding in inner
    assert names.final_norm in inner
    head = unembedding_module(loaded.model, names.unembedding)
    assert (head is None) == loaded.info.tied_embeddings


def _tamper(path: Path, **changes: object) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("family", "vocab_key", "hidden_key"),
    [("gpt2", "vocab_size", "n_embd"), ("gpt_neox", "vocab_size", "hidden_size")],
)
def test_vocab_and_width_are_checked_for_gpt2_and_neox(
    tmp_path: Path, family: str, vocab_key: str, hidden_key: str
) -> None:
    """The embedding is ``wte`` / ``embed_in`` there: the cross-check must find it."""
    path = build_checkpoint(tmp_path / family, family)
    config = json.loads((path / "config.json").read_text())
    _tamper(path, **{vocab_key: config[vocab_key] + 7})
    with pytest.raises(ModelLoadError, match="vocab_size"):
        worker.run_sync(load, str(path))
    _tamper(path, **{vocab_key: config[vocab_key], hidden_key: config[hidden_key] * 2})
    with pytest.raises(ModelLoadError, match=hidden_key):
        worker.run_sync(load, str(path))


def test_exaone4_without_head_dim_loads_as_transformers_would(tmp_path: Path) -> None:
    """transformers computes head_dim = hidden / heads when the config has none."""
    path = build_checkpoint(tmp_path / "exaone4", "exaone4")
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == config["hidden_size"] // config["num_attention_heads"]
    del config["head_dim"]
    (path / "config.json").write_text(json.dumps(config))
    loaded = worker.run_sync(load, str(path))
    result = worker.run_sync(analyze_loaded, loaded, "one two three", AnalysisConfig())
    assert result.layer_predictions and result.fidelity.max_abs_prob_diff <= 1e-5


# attribute on a model outside the registry (self-checked), as analyze serves it -------------


def _minicpm(tmp_path: Path, dim_model_base: int) -> LoadedModel:
    # MiniCPM divides the last hidden state by hidden_size / dim_model_base before its head.
    config = {"dim_model_base": dim_model_base, "scale_depth": 1.4, "scale_emb": 12.0}
    path = build_checkpoint(tmp_path / f"minicpm{dim_model_base}", "minicpm", **config)
    loaded = worker.run_sync(load, str(path))
    assert loaded.info.support == "self-checked"
    return loaded


def test_attribute_serves_a_self_checked_model_whose_head_splits(tmp_path: Path) -> None:
    """dim_model_base == hidden: the head is the final norm and lm_head; the components sum
    to the model's own logit."""
    loaded = _minicpm(tmp_path, 64)
    # Outside the registry the head is found by kind: the linear layer as wide as the vocabulary.
    assert unembedding_module(loaded.model) is loaded.model["lm_head"]
    assert not loaded.info.tied_embeddings
    config = AttributionConfig(use_chat_template=False)
    result = worker.run_sync(attribute_loaded, loaded, "The capital of France is", config)
    target = result.targets[0]
    assert abs(target.component_sum - target.logit_precap) <= 1e-3 * max(1, abs(target.logit))
    assert result.fidelity.max_abs_prob_diff <= 1e-4


def test_attribute_refuses_a_self_checked_head_it_cannot_split_saying_why(
    tmp_path: Path,
) -> None:
    loaded = _minicpm(tmp_path, 16)
    config = AttributionConfig(use_chat_template=False)
    with pytest.raises(UnsupportedModelError, match="self-checked") as caught:
        worker.run_sync(attribute_loaded, loaded, "The capital of France is", config)
    message = str(caught.value)
    assert "more than a final norm and a linear unembedding" in message
    assert "analyze and track_tokens serve it" in message and "\n" not in message
