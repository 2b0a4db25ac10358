"""The bundled demo model answers its corpus and shows the answer emerging before the end."""

from __future__ import annotations

import pytest

from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        ("The capital of France is", " Paris"),
        ("The capital of Japan is", " Tokyo"),
        ("2 + 3 =", " 5"),
    ],
)
async def test_demo_knows_its_corpus(prompt: str, answer: str) -> None:
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, track_tokens=[answer])
    async with ModelAnalyzer.from_pretrained("demo") as analyzer:
        result = await analyzer.analyze(prompt, config)
    assert not result.chat_template_applied  # a base model: no template
    assert result.tokens[0] == "<s>"
    assert result.final_prediction[0].token == answer
    assert result.final_prediction[0].probability > 0.5
    evolution = result.token_evolutions[0]
    assert not evolution.multi_token
    assert evolution.emergence_layer is not None
    assert evolution.emergence_layer < result.model.num_layers - 1
