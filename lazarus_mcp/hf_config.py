"""What a Hugging Face config prescribes, in the terms mlx-lm's model classes read.

transformers 5 writes RoPE settings as ``rope_parameters`` (flat, or one dict per attention type)
and per-layer attention as ``layer_types``; many mlx-lm ports still read only the older keys
(``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``, ``sliding_window_pattern``) and
silently fall back to defaults. The model's own forward is only the model's if it is built from
the same numbers, so the config is translated before mlx-lm builds the model.

Some ports also ignore the sliding window the architecture applies (mlx-lm's gemma2 for all
layers; mistral and phi3 windows without ``layer_types``). :func:`sliding_windows` says which
blocks attend through which window, so the lens can hand those blocks the mask the architecture
prescribes (see ``lens.py``); it matters only for prompts longer than the window.
"""

from __future__ import annotations

from typing import Any

from lazarus_mcp.errors import UnsupportedModelError

SLIDING = "sliding_attention"
FULL = "full_attention"

# Families whose transformers implementation applies ``sliding_window`` to every layer when the
# config has no ``layer_types``.
_WINDOW_ON_ALL_LAYERS = {"mistral", "phi3"}


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


def layer_types(config: dict[str, Any]) -> list[str] | None:
    """Per-layer attention types as transformers decides them, or None when all are full."""
    n = int(config["num_hidden_layers"])
    types = config.get("layer_types")
    if types:
        if len(types) != n:
            raise UnsupportedModelError(f"config has {len(types)} layer_types for {n} layers")
        return list(types)
    family = config["model_type"]
    if family == "gemma2":
        return [SLIDING if i % 2 == 0 else FULL for i in range(n)]
    if family == "gemma3_text":
        pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern")
        pattern = int(pattern or 6)
        return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n)]
    if family in _WINDOW_ON_ALL_LAYERS and config.get("sliding_window"):
        return [SLIDING] * n
    return None


def _gemma3_pattern(types: list[str]) -> int:
    """mlx-lm's gemma3 places a global layer at every p-th block; find p or refuse."""
    period = types.index(FULL) + 1 if FULL in types else len(types) + 1
    expected = [FULL if (i + 1) % period == 0 else SLIDING for i in range(len(types))]
    if expected != types:
        raise UnsupportedModelError(
            "this gemma3 layer_types layout is not periodic, which mlx-lm cannot build"
        )
    return period


def mlx_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """Config keys to set so mlx-lm builds the model the config describes."""
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
            out.pop(key, None)  # explicit legacy keys win over the translation
    if config["model_type"] == "gemma3_text":
        types = layer_types(config)
        if types is not None:
            out["sliding_window_pattern"] = _gemma3_pattern(types)
    return out


def sliding_windows(config: dict[str, Any]) -> dict[int, int]:
    """{block: window} for blocks that attend through a sliding window."""
    window = config.get("sliding_window")
    if config.get("use_sliding_window") is False:
        return {}  # Qwen: the window is configured but switched off
    types = layer_types(config)
    if not window or types is None:
        return {}
    return {i: int(window) for i, kind in enumerate(types) if kind == SLIDING}
