"""What a Hugging Face config prescribes, in the terms mlx-lm's model classes read.

transformers 5 writes RoPE settings as ``rope_parameters`` (flat, or one dict per attention type)
and per-layer attention as ``layer_types``; many mlx-lm ports still read only the older keys
(``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``, ``sliding_window_pattern``) and
silently fall back to defaults. The model's own forward is only the model's if it is built from
the same numbers, so the config is translated before mlx-lm builds the model.

These are the generic rules; what differs by family (default layer types, extra keys) is named
in the family registry (``families.py``), which calls these.
"""

from __future__ import annotations

from typing import Any

from lazarus_mcp.errors import UnsupportedModelError

SLIDING = "sliding_attention"
FULL = "full_attention"


def _rope_overrides(rope: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "rope_theta" in rope:
        out["rope_theta"] = float(rope["rope_theta"])
    if "partial_rotary_factor" in rope:
        out["partial_rotary_factor"] = float(rope["partial_rotary_factor"])
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        out["rope_scaling"] = {
            **{k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")},
            "type": kind,
            "rope_type": kind,
        }
    return out


def rope_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """mlx-lm's RoPE keys from transformers 5's ``rope_parameters``; explicit legacy keys win."""
    out: dict[str, Any] = {}
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and rope:
        if isinstance(rope.get(FULL), dict) or isinstance(rope.get(SLIDING), dict):
            out.update(_rope_overrides(rope.get(FULL) or {}))
            local = rope.get(SLIDING) or {}
            if "rope_theta" in local:
                out["rope_local_base_freq"] = float(local["rope_theta"])
        else:
            out.update(_rope_overrides(rope))
    for key in ("rope_theta", "rope_scaling", "partial_rotary_factor"):
        if key in config and config[key] is not None:
            out.pop(key, None)
    return out


def derived_sizes(config: dict[str, Any], hidden_key: str, heads_key: str) -> dict[str, Any]:
    """Sizes transformers derives when a config leaves them out, as its models do:
    ``head_dim = hidden // heads`` (a transformers-saved EXAONE 4 config has no ``head_dim``,
    which mlx-lm's port requires)."""
    hidden: Any = config.get(hidden_key)
    heads: Any = config.get(heads_key)
    if config.get("head_dim") is not None or not (_size(hidden) and _size(heads)):
        return {}
    return {"head_dim": hidden // heads}


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def explicit_layer_types(config: dict[str, Any]) -> list[str] | None:
    """The config's own ``layer_types``, checked against its layer count."""
    types = config.get("layer_types")
    if not types:
        return None
    n = int(config["num_hidden_layers"])
    if len(types) != n:
        raise UnsupportedModelError(f"config has {len(types)} layer_types for {n} layers")
    return list(types)


def periodic_layer_types(n: int, period: int) -> list[str]:
    """A global (full-attention) layer at every ``period``-th block, sliding ones between."""
    return [FULL if (i + 1) % period == 0 else SLIDING for i in range(n)]


def period_of(types: list[str]) -> int:
    """The period of a periodic layout (as mlx-lm's gemma3 builds it), or refuse."""
    period = types.index(FULL) + 1 if FULL in types else len(types) + 1
    if periodic_layer_types(len(types), period) != types:
        raise UnsupportedModelError(
            "this layer_types layout is not periodic, which the mlx-lm port cannot build"
        )
    return period


def windows_from_types(config: dict[str, Any], types: list[str] | None) -> dict[int, int]:
    """{block: window} for blocks that attend through a sliding window."""
    window = config.get("sliding_window")
    if config.get("use_sliding_window") is False:
        return {}  # Qwen: the window is configured but switched off
    if not window or types is None:
        return {}
    return {i: int(window) for i, kind in enumerate(types) if kind == SLIDING}
