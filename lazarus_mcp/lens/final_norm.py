"""The final norm as an affine map, read from the model's own norm module by probing it.

Direct logit attribution splits the final residual stream ``x = sum of components`` through the
final norm: ``norm(x) = centre(x) / s(x) * g + b``. Given ``s`` (fixed by the whole ``x``), the
map is linear in each component, so each component's share of a logit is
``(centre(c) / s) . (g * W_U[t])``. ``g``, ``b`` and whether the norm centres are not assumed per
family (Gemma's ``1 + w``, LayerNorm's bias): they are measured from what the module computes on
probe vectors, so the decomposition follows the module the model actually runs.

Probes: ``v`` alternates +1/-1 (mean 0, mean square 1), so for RMSNorm and LayerNorm alike
``norm(±v) = ±v * g / sqrt(1 + eps) + b``; half their difference gives ``g``, half their sum ``b``.
A norm centres when shifting the input by a constant leaves the output unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from lazarus_mcp.errors import UnsupportedModelError


@dataclass(frozen=True)
class NormAffine:
    centres: bool  # LayerNorm: subtracts the mean before scaling
    weight: mx.array  # [D] float32: the effective gain g
    bias: mx.array | None  # [D] float32, or None when the norm adds nothing
    eps: float

    def centre(self, x: mx.array) -> mx.array:
        return x - mx.mean(x, axis=-1, keepdims=True) if self.centres else x

    def scale(self, x: mx.array) -> mx.array:
        """s(x): the divisor the norm applies to x [..., D], eps included; shape [..., 1]."""
        c = self.centre(x.astype(mx.float32))
        return mx.sqrt(mx.mean(c * c, axis=-1, keepdims=True) + self.eps)


def _eps(norm: Any, apply: Callable[[mx.array], mx.array], v: mx.array, g: mx.array) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, int | float):
            return float(value)
    # Not exposed: measure it. norm(c v) = c v g / sqrt(c^2 + eps) for a small c.
    c = 1e-3
    out = apply(v * c)
    ratio = mx.sum(mx.abs(out)) / mx.sum(mx.abs(v * g * c))
    return max(0.0, float(1.0 / ratio**2) - c * c)


def probe_norm(norm: Callable[[mx.array], mx.array], hidden_size: int, dtype: Any) -> NormAffine:
    """The norm's affine form, measured on three probe vectors."""
    if hidden_size % 2:
        raise UnsupportedModelError("attribution needs an even hidden size to probe the norm")

    def apply(x: mx.array) -> mx.array:
        return norm(x.astype(dtype)[None]).astype(mx.float32)[0]

    v = mx.where(mx.arange(hidden_size) % 2 == 0, 1.0, -1.0).astype(mx.float32)
    plus, minus, shifted = apply(v), apply(-v), apply(v + 3.0)
    half = (plus - minus) / 2
    bias = (plus + minus) / 2
    centres = bool(mx.allclose(shifted, plus, rtol=1e-3, atol=1e-4))
    # The eps term in sqrt(1 + eps) is read once g is known up to it (eps << 1).
    eps = _eps(norm, apply, v, half * v)
    weight = half * v * math.sqrt(1.0 + eps)
    has_bias = bool(mx.any(mx.abs(bias) > 1e-7 * (1.0 + mx.max(mx.abs(weight)))))
    mx.eval(weight, bias)
    return NormAffine(centres, weight, bias if has_bias else None, eps)
