"""Corrections where an mlx-lm port computes something other than the architecture it ports.

Each correction is verified against transformers (tests/test_torch_reference.py) and applied
right after loading, so every forward of the model (not only the lens) computes the reference
architecture. The family registry (``families.py``) says which family needs which; anything the
config alone can fix is fixed by the config translation instead.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import backbone

# transformers runs every Gemma (1) MLP with the tanh approximation of GELU, mapping the legacy
# "gelu" of the official configs onto it; mlx-lm's gemma port uses the exact erf GELU.
_TANH_GELU = {"gelu", "gelu_pytorch_tanh", "gelu_new", "gelu_fast"}


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
    if activation not in _TANH_GELU:
        return None
    for block in backbone(model).layers:
        block["mlp"] = TanhGeluMLP(block.mlp)
    return "gemma MLP uses the tanh-approximated GELU (as transformers does)"
