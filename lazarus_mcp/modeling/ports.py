"""Corrections where an mlx-lm port computes something other than the architecture it ports.

Each correction is verified against transformers (tests/test_torch_reference.py and
tests/test_torch_families.py) and applied to the model itself, so every forward of the model (not
only the lens) computes the reference architecture. Build corrections run on the freshly built
model, before its weights are read (a layer of another shape, weight names); the others right
after loading. The family registry (``families.py``) says which family needs which; anything the
config alone can fix is fixed by the config translation instead.

Measured without them on tiny transformers-5 checkpoints (max |Δp| of the final prediction):
starcoder2's exact GELU 0.02-0.03; gpt_neox's exact GELU and width: the weights do not load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import blocks

# transformers' tanh-approximated GELUs (and Gemma's legacy "gelu", which it maps onto one).
_TANH_GELU = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast"}


def _activation(name: str) -> Callable[[mx.array], mx.array]:
    if name in _TANH_GELU:
        return nn.gelu_approx
    if name == "gelu":
        return nn.gelu
    if name in ("relu", "silu"):
        return nn.relu if name == "relu" else nn.silu
    raise ValueError(f"activation {name!r}")


class TanhGeluMLP(nn.Module):
    """A gated MLP with the tanh-approximated GELU, over the port's own projections."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def __call__(self, x: mx.array) -> mx.array:
        m = self.mlp
        return m.down_proj(nn.gelu_approx(m.gate_proj(x)) * m.up_proj(x))


def gemma_tanh_gelu(model: nn.Module, config: dict[str, Any]) -> str | None:
    """Gemma (1): the MLP's GELU as transformers computes it."""
    activation = config.get("hidden_act") or config.get("hidden_activation") or "gelu"
    if activation not in _TANH_GELU | {"gelu"}:
        return None
    for block in blocks(model):
        block["mlp"] = TanhGeluMLP(block.mlp)
    return "gemma MLP uses the tanh-approximated GELU (as transformers does)"


class ActivatedMLP(nn.Module):
    """A two-layer MLP ``down(act(up(x)))`` over the port's own projections."""

    def __init__(self, mlp: nn.Module, up: str, down: str, act: str) -> None:
        super().__init__()
        self.mlp = mlp
        self._names = (up, down)
        self._act = _activation(act)

    def __call__(self, x: mx.array) -> mx.array:
        up, down = self._names
        return self.mlp[down](self._act(self.mlp[up](x)))


def starcoder2_gelu(model: nn.Module, config: dict[str, Any]) -> str | None:
    """StarCoder2: the MLP's activation as configured (the port always uses the exact GELU)."""
    activation = config.get("hidden_act", "gelu_pytorch_tanh")
    if activation == "gelu":
        return None
    for block in blocks(model):
        block["mlp"] = ActivatedMLP(block.mlp, "c_fc", "c_proj", activation)
    return f"starcoder2 MLP uses {activation} (the port uses the exact GELU)"


class NeoXMLP(nn.Module):
    """GPT-NeoX's MLP with the configured width and activation (same weight names)."""

    def __init__(self, hidden: int, intermediate: int, act: str) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(hidden, intermediate)
        self.dense_4h_to_h = nn.Linear(intermediate, hidden)
        self._act = _activation(act)

    def __call__(self, x: mx.array) -> mx.array:
        return self.dense_4h_to_h(self._act(self.dense_h_to_4h(x)))


def neox_mlp(model: nn.Module, config: dict[str, Any]) -> str | None:
    """GPT-NeoX: ``intermediate_size`` and ``hidden_act`` (the port: 4x width, tanh GELU)."""
    hidden = int(config["hidden_size"])
    width = int(config.get("intermediate_size") or 4 * hidden)
    activation = config.get("hidden_act", "gelu")
    for block in blocks(model):
        block["mlp"] = NeoXMLP(hidden, width, activation)
    return f"gpt_neox MLP of width {width} with {activation} (the port: 4x, tanh GELU)"


def strip_transformer_prefix(model: nn.Module, config: dict[str, Any]) -> str | None:
    """GPT-2 saved by transformers names its weights ``transformer.*``; the port reads them bare."""
    own = model.sanitize

    def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
        bare = {k.removeprefix("transformer."): v for k, v in weights.items()}
        bare.pop("lm_head.weight", None)  # GPT-2's head is the tied embedding
        return dict(own(bare))

    object.__setattr__(model, "sanitize", sanitize)
    return None


def _untruncated_yarn_freqs(dims: int, base: float, rope: dict[str, Any]) -> mx.array:
    """YaRN's per-pair frequencies with the correction range left unrounded (``truncate:
    false``, as gpt-oss is configured); mlx-lm's YarnRoPE always rounds it to whole dims."""
    factor = float(rope["factor"])
    original = float(rope["original_max_position_embeddings"])

    def boundary(rotations: float) -> float:
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(boundary(float(rope.get("beta_fast", 32.0))), 0.0)
    high = min(boundary(float(rope.get("beta_slow", 1.0))), dims - 1.0)
    if high == low:
        high += 0.001
    ramp = mx.clip((mx.arange(dims // 2, dtype=mx.float32) - low) / (high - low), 0, 1)
    extrapolate = 1.0 - ramp  # 1 where positions extrapolate (high frequencies)
    base_freqs = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)  # inverse wavelengths
    interpolated = factor * base_freqs
    return (interpolated * base_freqs) / (interpolated * extrapolate + base_freqs * ramp)


def yarn_untruncated(model: nn.Module, config: dict[str, Any]) -> str | None:
    """YaRN with ``truncate: false``: the frequencies transformers computes."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type")) != "yarn" or rope.get("truncate", True):
        return None
    base = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    for block in blocks(model):
        attention = block.self_attn
        dims = int(attention.rope.dims)
        attention.rope._freqs = _untruncated_yarn_freqs(dims, base, rope)
    return "YaRN correction range not rounded (truncate: false; the port always rounds it)"


def _split_fused_experts(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        if key.endswith("experts.gate_up_proj"):
            # [experts, hidden, 2 x inner], gate and up interleaved along the last axis.
            stem = key.removesuffix("gate_up_proj")
            out[stem + "gate_proj.weight"] = mx.contiguous(value[..., ::2].swapaxes(-1, -2))
            out[stem + "up_proj.weight"] = mx.contiguous(value[..., 1::2].swapaxes(-1, -2))
        elif key.endswith("experts.gate_up_proj_bias"):
            stem = key.removesuffix("gate_up_proj_bias")
            out[stem + "gate_proj.bias"] = mx.contiguous(value[..., ::2])
            out[stem + "up_proj.bias"] = mx.contiguous(value[..., 1::2])
        elif key.endswith("experts.down_proj"):
            out[key + ".weight"] = mx.contiguous(value.swapaxes(-1, -2))  # [experts, in, out]
        elif key.endswith("experts.down_proj_bias"):
            out[key.removesuffix("_bias") + ".bias"] = value
        else:
            out[key] = value
    return out


def fused_experts_layout(model: nn.Module, config: dict[str, Any]) -> str | None:
    """gpt-oss saved by transformers 5: fused, input-major expert weights, which the port's
    own renaming (for the original MXFP4 checkpoint) does not recognise."""
    own = model.sanitize

    def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
        if any(k.endswith("experts.gate_up_proj") for k in weights):
            weights = _split_fused_experts(weights)
        return dict(own(weights))

    object.__setattr__(model, "sanitize", sanitize)
    return None
