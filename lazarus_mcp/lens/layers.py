"""Which blocks to capture: the layer strategies."""

from __future__ import annotations

from typing import Any, TypeVar

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy


def choose_strategy(
    strategy: LayerStrategy | None, custom_layers: list[int] | None, all_layers: bool = False
) -> LayerStrategy:
    """The strategy every interface derives from its options: ``all_layers`` wins, an explicit
    strategy next, else ``custom`` when layers are given and ``evenly_spaced`` when not."""
    if all_layers:
        return LayerStrategy.ALL
    if strategy is not None:
        return strategy
    return LayerStrategy.CUSTOM if custom_layers else LayerStrategy.EVENLY_SPACED


Config = TypeVar("Config", bound=AnalysisConfig)


def layer_config(
    config_type: type[Config],
    strategy: LayerStrategy | None,
    layers: list[int] | None,
    *,
    all_layers: bool = False,
    every_by_default: bool = False,
    **fields: Any,
) -> Config:
    """The core's config from an interface's layer options: ``all_layers`` (or, for the
    depth-reading calls, no layer option at all) means every block; otherwise
    :func:`choose_strategy` decides. Raises pydantic's ``ValidationError`` on invalid values."""
    every = all_layers or (every_by_default and strategy is None and not layers)
    return config_type(
        layer_strategy=choose_strategy(strategy, layers, every), custom_layers=layers, **fields
    )


def normalize_layer(index: int, num_layers: int) -> int:
    """Map a possibly negative block index onto 0..N-1, or fail with the valid range."""
    resolved = index + num_layers if index < 0 else index
    if not 0 <= resolved < num_layers:
        raise InvalidRequestError(
            f"layer {index} is out of range: this model has {num_layers} layers "
            f"(use 0..{num_layers - 1}, or -1..-{num_layers} from the end)"
        )
    return resolved


def select_layers(config: AnalysisConfig, num_layers: int) -> list[int]:
    """The sorted, distinct blocks a config asks for."""
    last = num_layers - 1
    strategy = config.layer_strategy
    if strategy is LayerStrategy.ALL:
        return list(range(num_layers))
    if strategy is LayerStrategy.FIRST_LAST:
        return sorted({0, last})
    if strategy is LayerStrategy.EVENLY_SPACED:
        return sorted({*range(0, num_layers, config.layer_step), last})
    return sorted({normalize_layer(i, num_layers) for i in config.custom_layers or ()})
