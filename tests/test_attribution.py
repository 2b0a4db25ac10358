"""Direct logit attribution and the sub-layer lens against transformers (refs-extra), the final
norm's probe on norms of every kind, and fidelity/milestones on every analysis."""

from __future__ import annotations

import json
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from lazarus_mcp.analyses.attribution import attribute_loaded
from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer
from lazarus_mcp.lens.final_norm import probe_norm
from lazarus_mcp.lens.milestones import milestones
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AttributionConfig, AttributionResult
from tests.conftest import PARITY, PARITY_MODELS, parity_ref
from tests.parity_check import PROB_TOL, assert_matches_reference

pytestmark = pytest.mark.anyio

LOGIT_TOL = 5e-3
SUM_TOL = 1e-3


def extra_ref(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PARITY / "refs-extra" / f"{name}.json").read_text())
    return data


def _as_lens(result: AttributionResult, rows: str) -> dict[str, Any]:
    data = result.model_dump(mode="json")
    return {**data, "layer_predictions": data[rows]}


@pytest.mark.parametrize("name", PARITY_MODELS)
async def test_attribution_and_sublayer_lens_match_transformers(name: str) -> None:
    ref, extra = parity_ref(name), extra_ref(name)
    worst_dla = worst_mid = 0.0
    async with ModelAnalyzer.from_pretrained(str(PARITY / name)) as analyzer:
        for case, more in zip(ref["cases"], extra["cases"], strict=True):
            assert more["prompt"] == case["prompt"] and more["raw"] == case["raw"]
            config = AttributionConfig(
                layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=not case["raw"]
            )
            ids = more["dla"]["tokens"]
            result = await worker.run(
                attribute_loaded, analyzer.loaded, case["prompt"], config, ids
            )
            # The sub-layer lens: top-10 and the three tokens against full reference log-probs.
            worst_mid = max(
                worst_mid,
                assert_matches_reference(
                    _as_lens(result, "sublayer_predictions"), {**case, "layers": more["mid"]}
                ),
            )
            for row, mid in zip(result.sublayer_predictions, more["mid"], strict=True):
                probs = np.exp(np.asarray(mid["logprobs"]))
                for t in row.tracked:
                    assert abs(t.probability - probs[t.token_id]) <= PROB_TOL
            # The block lens of the same pass is the ordinary logit lens.
            assert_matches_reference(_as_lens(result, "layer_predictions"), case)
            assert [t.token_id for t in result.targets] == ids
            ours = {(c.kind, c.layer_idx): c.logits for c in result.components}
            assert {(c["kind"], c["layer_idx"]) for c in more["dla"]["components"]} == set(ours)
            for component in more["dla"]["components"]:
                got = np.asarray(ours[(component["kind"], component["layer_idx"])])
                diff = np.max(np.abs(got - np.asarray(component["values"])))
                worst_dla = max(worst_dla, float(diff))
                assert diff <= LOGIT_TOL, (component["kind"], component["layer_idx"], diff)
            for target, precap in zip(result.targets, more["dla"]["logit_precap"], strict=True):
                assert abs(target.logit_precap - precap) <= LOGIT_TOL
                assert abs(target.component_sum - target.logit_precap) <= SUM_TOL
            assert result.fidelity.top1_agrees and result.fidelity.max_abs_prob_diff < 1e-5
    # float32 MLX sits far inside the tolerances (measured: dla <= 3e-5, mid <= 4e-6).
    assert worst_dla < 5e-4 and worst_mid < 1e-4, (worst_dla, worst_mid)


async def test_default_target_foil_and_soft_capped_logit() -> None:
    async with ModelAnalyzer.from_pretrained(str(PARITY / "gemma2")) as analyzer:
        config = AttributionConfig(
            layer_strategy=LayerStrategy.CUSTOM,
            custom_layers=[1, -1],
            use_chat_template=False,
            foil=" the",
        )
        result = await analyzer.attribute("The capital of France is", config)
        as_target = config.model_copy(update={"track_tokens": [" the"], "foil": None})
        foil_alone = await analyzer.attribute("The capital of France is", as_target)
    [target] = result.targets
    assert target.query is None
    assert target.token_id == result.final_prediction[0].token_id
    assert result.captured_layers == [1, 5]
    assert [p.layer_idx for p in result.sublayer_predictions] == [1, 5]
    # 13 components: the embedding and 2 per block; RMSNorm and an unbiased head add no bias.
    assert len(result.components) == 13 and result.components[0].kind == "embedding"
    # Gemma 2 soft-caps at 30: the model's logit is 30 tanh(pre-cap / 30).
    assert target.logit == pytest.approx(30 * np.tanh(target.logit_precap / 30), abs=1e-4)
    assert result.foil is not None and result.logit_diffs is not None
    for ours, theirs, diff in zip(
        result.components, foil_alone.components, result.logit_diffs, strict=True
    ):
        assert len(ours.logits) == 1
        assert diff == pytest.approx(ours.logits[0] - theirs.logits[0], abs=1e-5)
    total = sum(result.logit_diffs)
    assert total == pytest.approx(target.logit_precap - result.foil.logit_precap, abs=SUM_TOL)
    assert result.sublayer_predictions[0].tracked[1].token == " the"


def _check_probe(norm: nn.Module, gain: np.ndarray, bias: np.ndarray | None, centres: bool) -> None:
    hidden = gain.shape[0]
    affine = probe_norm(norm, hidden, mx.float32)
    assert affine.centres is centres
    np.testing.assert_allclose(np.array(affine.weight), gain, rtol=1e-5, atol=1e-6)
    if bias is None:
        assert affine.bias is None
    else:
        assert affine.bias is not None
        np.testing.assert_allclose(np.array(affine.bias), bias, atol=1e-6)
    # The affine form reproduces the module on an arbitrary vector.
    x = mx.random.normal((hidden,), key=mx.random.key(3)) * 5 + 2
    rebuilt = affine.centre(x) / affine.scale(x) * affine.weight
    if affine.bias is not None:
        rebuilt = rebuilt + affine.bias
    np.testing.assert_allclose(np.array(rebuilt), np.array(norm(x[None])[0]), atol=2e-5)


def test_norm_probe_reads_rms_gemma_and_layer_norms() -> None:
    from mlx_lm.models.gemma import RMSNorm as GemmaRMSNorm

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    rms = nn.RMSNorm(64, eps=1e-6)
    rms.weight = mx.array(w)
    _check_probe(rms, w, None, centres=False)
    gemma = GemmaRMSNorm(64, eps=1e-6)
    gemma.weight = mx.array(w)
    _check_probe(gemma, 1 + w, None, centres=False)  # Gemma scales by 1 + w
    layer = nn.LayerNorm(64, eps=1e-5)
    layer.weight, layer.bias = mx.array(w), mx.array(b)
    _check_probe(layer, w, b, centres=True)


async def test_every_analysis_checks_its_lens_and_names_its_milestones() -> None:
    async with ModelAnalyzer.from_pretrained(str(PARITY / "llama")) as analyzer:
        config = AnalysisConfig(layer_strategy=LayerStrategy.FIRST_LAST, use_chat_template=False)
        result = await analyzer.analyze("The capital of France is", config)
    assert result.fidelity.top1_agrees
    assert result.fidelity.max_abs_prob_diff < 1e-5 and result.fidelity.kl_divergence < 1e-5
    m = result.milestones
    assert m.final_token_id == result.final_prediction[0].token_id
    # The last captured layer is the output itself: the final top-1 ranks 1 there.
    assert m.rank_1_layer is not None and m.rank_le_10_layer is not None
    assert m.rank_le_10_layer <= m.rank_le_5_layer <= m.rank_1_layer  # type: ignore[operator]


def test_milestones_from_layer_statistics() -> None:
    text = str  # display text: the id itself is enough here
    m = milestones(
        text,  # type: ignore[arg-type]
        layers=[0, 2, 4, 6, 8],
        top1_ids=[5, 7, 9, 7, 9],
        final_top1_ranks=[40, 8, 1, 3, 1],
        entropy=[4.0, 2.0, 0.9, 1.5, 0.2],
        final_top1=9,
    )
    assert (m.rank_le_10_layer, m.rank_le_5_layer, m.rank_1_layer) == (2, 4, 8)
    assert m.entropy_below_1_layer == 4
    assert [(c.layer_idx, c.token_id) for c in m.top1_changes] == [(2, 7), (4, 9), (6, 7), (8, 9)]


@pytest.mark.parametrize("name", ["llama", "phi3", "gemma2", "gemma3-text", "olmo2"])
async def test_mid_module_derived_from_block_names_agrees_with_the_registry(name: str) -> None:
    from lazarus_mcp.modeling.families import FamilySpec, family_spec

    async with ModelAnalyzer.from_pretrained(str(PARITY / name)) as analyzer:
        block = analyzer.loaded.model.model.layers[0]
        registered = family_spec(analyzer.info.family).mid_residual_module(block)
    # A family added without the field gets the same module from the block's names.
    assert FamilySpec("unregistered").mid_residual_module(block) == registered
    assert FamilySpec("unregistered", parallel_residual=True).mid_residual_module(block) is None
    expected = {"gemma2": "pre_feedforward_layernorm", "gemma3-text": "pre_feedforward_layernorm"}
    assert registered == expected.get(
        name, "mlp" if name == "olmo2" else "post_attention_layernorm"
    )
