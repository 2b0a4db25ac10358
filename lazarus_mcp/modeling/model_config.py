"""A model's numbers read through the family registry: context length, heads, layers, widths.

Each architecture names these differently (GPT-2: ``n_positions``, ``n_head``, ``n_layer``,
``n_embd``; most others: ``max_position_embeddings``, ``num_attention_heads``, ...), so a
lookup by one family's key silently finds nothing on another: a tiny GPT-2 with
``n_positions=32`` took an 80-token prompt and read its position table out of range. Here
the key comes from the family's :class:`~lazarus_mcp.modeling.families.Names`; a model outside
the registry (self-checked) is read by every key some registry family uses.

The request gate calls :func:`context_length` and :func:`num_heads` (with a config dict or a
loaded model); the load stores their values on the ``LoadedModel`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lazarus_mcp.modeling.families import FAMILIES, Names

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel

Config = dict[str, Any]


def names_and_text(config: Config) -> tuple[Names | None, Config]:
    """The family's names and the language model's config (a container's ``text_config``);
    names None for a model outside the registry."""
    spec = FAMILIES.get(str(config.get("model_type")))
    if spec is None:
        return None, config
    try:
        spec, text = spec.text(config)
    except Exception:
        return None, config
    return spec.names, text


def _all(field: str) -> tuple[str, ...]:
    """Every key some registry family uses for this field, in registry order."""
    keys: list[str] = []
    for spec in FAMILIES.values():
        value = getattr(spec.names, field)
        for key in value if isinstance(value, tuple) else (value,):
            if key not in keys:
                keys.append(key)
    return tuple(keys)


def _keys(names: Names | None, field: str) -> tuple[str, ...]:
    if names is None:
        return _all(field)
    value = getattr(names, field)
    return value if isinstance(value, tuple) else (value,)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def config_int(config: Config, field: str) -> int | None:
    """The positive integer the config holds for a :class:`Names` field (``"context"``,
    ``"heads"``, ``"layers"``, ``"hidden"``, ``"intermediate"``), or None."""
    names, text = names_and_text(config)
    for key in _keys(names, field):
        found = _positive_int(text.get(key))
        if found is not None:
            return found
    return None


def _config(config_or_loaded: Config | LoadedModel) -> Config:
    if isinstance(config_or_loaded, dict):
        return config_or_loaded
    return config_or_loaded.config


def context_length(config_or_loaded: Config | LoadedModel) -> int | None:
    """The longest sequence the model's position encoding is built for (None: not stated)."""
    return config_int(_config(config_or_loaded), "context")


def num_heads(config_or_loaded: Config | LoadedModel) -> int | None:
    """The number of attention (query) heads per block."""
    return config_int(_config(config_or_loaded), "heads")


def num_layers(config_or_loaded: Config | LoadedModel) -> int | None:
    return config_int(_config(config_or_loaded), "layers")


def hidden_size(config_or_loaded: Config | LoadedModel) -> int | None:
    return config_int(_config(config_or_loaded), "hidden")


def intermediate_size(config_or_loaded: Config | LoadedModel) -> int | None:
    """The MLP's inner width (None: not stated; GPT-2's default is 4 x hidden)."""
    return config_int(_config(config_or_loaded), "intermediate")
