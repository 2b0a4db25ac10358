"""Layer strategies and their validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.layers import select_layers
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (AnalysisConfig(layer_strategy=LayerStrategy.ALL), list(range(22))),
        (AnalysisConfig(), [0, 4, 8, 12, 16, 20, 21]),
        (AnalysisConfig(layer_step=7), [0, 7, 14, 21]),
        (AnalysisConfig(layer_step=100), [0, 21]),
        (AnalysisConfig(layer_strategy=LayerStrategy.FIRST_LAST), [0, 21]),
        (
            AnalysisConfig(layer_strategy=LayerStrategy.CUSTOM, custom_layers=[-1, 0, 4, 4, -22]),
            [0, 4, 21],
        ),
    ],
)
def test_strategies(config: AnalysisConfig, expected: list[int]) -> None:
    assert select_layers(config, 22) == expected


def test_single_layer_model() -> None:
    assert select_layers(AnalysisConfig(layer_strategy=LayerStrategy.FIRST_LAST), 1) == [0]


@pytest.mark.parametrize("layer", [22, -23, 100])
def test_out_of_range_layer_names_the_valid_range(layer: int) -> None:
    config = AnalysisConfig(layer_strategy=LayerStrategy.CUSTOM, custom_layers=[layer])
    with pytest.raises(InvalidRequestError, match=r"0\.\.21"):
        select_layers(config, 22)


def test_custom_without_layers_is_rejected() -> None:
    with pytest.raises(ValidationError, match="custom_layers"):
        AnalysisConfig(layer_strategy=LayerStrategy.CUSTOM)


def test_config_bounds() -> None:
    with pytest.raises(ValidationError):
        AnalysisConfig(top_k=0)
    with pytest.raises(ValidationError):
        AnalysisConfig(layer_step=0)
    with pytest.raises(ValidationError):
        AnalysisConfig(embedding_scale=0)
    with pytest.raises(ValidationError):
        AnalysisConfig(unknown_field=1)  # type: ignore[call-arg]
