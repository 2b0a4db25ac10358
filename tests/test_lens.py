"""The lens head reproduces each family's own output, and the taps leave the forward untouched."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.modeling.families import FAMILIES as SUPPORTED_FAMILIES
from lazarus_mcp.modeling.loading import LoadedModel, LoadOptions, load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.checkpoints import FAMILY_CONFIGS, build_checkpoint
from tests.conftest import PARITY, PARITY_MODELS

PROMPT = "The capital of France is"


def _last_block_check(loaded: LoadedModel) -> tuple[float, float]:
    """(|head(h_{N-1}) - model logits|, |model logits with taps - without|), max-abs, relative
    to the largest logit. The lens forward runs the model's head on the analyzed position only
    (as transformers does with logits_to_keep=1), so a BLAS may round that one row differently
    from the same row of a whole-sequence GEMM: equal to float rounding, not always bit for bit."""
    ids = loaded.tokenizer.encode(PROMPT)
    last = loaded.info.num_layers - 1
    captured, final = forward_with_taps(loaded.model, ids, list(range(last + 1)))
    lens_last = loaded.head(captured[last][None])[0]
    plain = loaded.model(mx.array([ids]))[0, -1].astype(mx.float32)
    final = final.astype(mx.float32)
    scale = max(1.0, float(mx.max(mx.abs(plain))))
    return (
        float(mx.max(mx.abs(lens_last - final))) / scale,
        float(mx.max(mx.abs(plain - final))) / scale,
    )


def test_every_supported_family_has_a_built_checkpoint() -> None:
    assert set(FAMILY_CONFIGS) == set(SUPPORTED_FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
@pytest.mark.parametrize("dtype", ["native", "bfloat16"])
def test_last_block_lens_equals_model_logits(tmp_path: Path, family: str, dtype: str) -> None:
    path = build_checkpoint(tmp_path / family, family)
    loaded = worker.run_sync(load, str(path), LoadOptions(dtype=dtype))
    head_diff, tap_diff = worker.run_sync(_last_block_check, loaded)
    tolerance = 1e-5 if dtype == "native" else 1e-2
    assert tap_diff <= tolerance
    assert head_diff <= tolerance


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_parity_last_block_lens_equals_model_logits(name: str) -> None:
    loaded = worker.run_sync(load, str(PARITY / name))
    head_diff, tap_diff = worker.run_sync(_last_block_check, loaded)
    assert tap_diff <= 1e-5
    assert head_diff <= 1e-5


def _analyze(path: Path | str, config: AnalysisConfig, prompt: str = PROMPT) -> dict:
    loaded = worker.run_sync(load, str(path))
    return worker.run_sync(analyze_loaded, loaded, prompt, config).model_dump(mode="json")


def test_embedding_scale_override_equals_scaled_embedding_weights(tmp_path: Path) -> None:
    """--embedding-scale 2 on an untied model == the same model with its embeddings doubled."""
    scaled = tmp_path / "llama-x2"
    shutil.copytree(PARITY / "llama", scaled)
    weights = load_file(str(scaled / "model.safetensors"))
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"] * 2
    save_file(weights, str(scaled / "model.safetensors"))
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5, use_chat_template=False)
    overridden = _analyze(PARITY / "llama", config.model_copy(update={"embedding_scale": 2.0}))
    reference = _analyze(scaled, config)
    assert overridden["embedding_scale"] == 2.0
    assert reference["embedding_scale"] is None
    for ours, theirs in zip(
        overridden["layer_predictions"], reference["layer_predictions"], strict=True
    ):
        assert [t["token_id"] for t in ours["top_k"]] == [t["token_id"] for t in theirs["top_k"]]
        np.testing.assert_allclose(
            [t["probability"] for t in ours["top_k"]],
            [t["probability"] for t in theirs["top_k"]],
            atol=1e-5,
        )
    default = _analyze(PARITY / "llama", config)
    assert default["layer_predictions"] != overridden["layer_predictions"]


def test_gemma_scale_is_the_models_own_and_overridable() -> None:
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, use_chat_template=False)
    default = _analyze(PARITY / "gemma", config)
    assert default["model"]["embedding_scale"] == 8.0
    assert default["embedding_scale"] == 8.0
    same = _analyze(PARITY / "gemma", config.model_copy(update={"embedding_scale": 8.0}))
    assert same["layer_predictions"] == default["layer_predictions"]
    other = _analyze(PARITY / "gemma", config.model_copy(update={"embedding_scale": 1.0}))
    assert other["embedding_scale"] == 1.0
    assert other["layer_predictions"] != default["layer_predictions"]


def test_gemma_scale_is_sqrt_hidden_in_compute_dtype(tmp_path: Path) -> None:
    """mlx-lm rounds Gemma 3's sqrt(hidden) to bfloat16; a float32 model must use float32's."""
    path = build_checkpoint(
        tmp_path / "g3", "gemma3_text", hidden_size=96, head_dim=24, query_pre_attn_scalar=24
    )
    loaded = worker.run_sync(load, str(path))
    assert loaded.info.embedding_scale == pytest.approx(math.sqrt(96), rel=1e-6)
    assert loaded.applied_embedding_scale == 9.8125  # what mlx-lm's forward multiplies by
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, use_chat_template=False)
    default = worker.run_sync(analyze_loaded, loaded, PROMPT, config)
    exact = config.model_copy(update={"embedding_scale": loaded.info.embedding_scale})
    rounded = config.model_copy(update={"embedding_scale": 9.8125})
    assert worker.run_sync(analyze_loaded, loaded, PROMPT, exact).layer_predictions == (
        default.layer_predictions
    )
    assert worker.run_sync(analyze_loaded, loaded, PROMPT, rounded).layer_predictions != (
        default.layer_predictions
    )


def test_tracked_tokens_agree_with_top_k() -> None:
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL, top_k=3, use_chat_template=False, track_tokens=[" is"]
    )
    result = _analyze(PARITY / "gemma2", config)
    evolution = result["token_evolutions"][0]
    for layer, step in zip(result["layer_predictions"], evolution["layers"], strict=True):
        ids = [t["token_id"] for t in layer["top_k"]]
        if evolution["token_id"] in ids:
            assert step["rank"] == ids.index(evolution["token_id"]) + 1
            assert step["probability"] == pytest.approx(
                layer["top_k"][step["rank"] - 1]["probability"], rel=1e-6
            )
        else:
            assert step["rank"] > 3
    ranks = [s["rank"] for s in evolution["layers"]]
    first_top = next((s["layer_idx"] for s in evolution["layers"] if s["rank"] == 1), None)
    assert evolution["emergence_layer"] == first_top
    assert ranks[-1] == evolution["final_rank"]


def test_entropy_and_kl_are_consistent() -> None:
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, use_chat_template=False)
    result = _analyze(PARITY / "qwen3", config)
    layers = result["layer_predictions"]
    assert layers[-1]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    vocab = result["model"]["vocab_size"]
    for layer in layers:
        assert 0.0 <= layer["entropy"] <= math.log(vocab) + 1e-4
        assert layer["kl_divergence"] >= 0.0


def test_parity_config_matches_what_the_lens_reports() -> None:
    config = json.loads((PARITY / "gemma2" / "config.json").read_text())
    result = _analyze(PARITY / "gemma2", AnalysisConfig(layer_strategy=LayerStrategy.FIRST_LAST))
    assert result["model"]["final_logit_softcap"] == config["final_logit_softcapping"]
    assert result["captured_layers"] == [0, config["num_hidden_layers"] - 1]
