"""Which model a lens belongs to, and the check that a lens is read on that model.

A lens is a map between one model's residual bases: read on another model of the same shape
(a base model's lens on its instruct variant, a different fine-tune) it returns confident
nonsense. So a lens records the architecture (family, blocks, width, vocabulary) and a
fingerprint of the weights themselves: the final norm's effective gain at 16 fixed dimensions,
as measured from the norm module (``lens/final_norm.py``, so Gemma's ``1 + w`` is seen as the
model applies it). Norm gains are stored unquantized by every quantizer we load (MLX, GGUF), so
the fingerprint of a Q4 model matches its float original; tolerance 2 % covers bf16 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lazarus_mcp.lenses.safetensors_io import LensFileError

PROBE_DIMS = 16


@dataclass
class ModelIdentity:
    family: str
    num_layers: int
    d_model: int
    vocab_size: int
    name: str = ""
    norm_probe: list[float] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: Any) -> ModelIdentity:
        if not isinstance(raw, dict):
            raise LensFileError("lens config: 'model' (the base model's identity) is missing")
        try:
            identity = cls(**raw)
        except TypeError as exc:
            raise LensFileError("lens config: 'model' has unknown or missing fields") from exc
        ints = (identity.num_layers, identity.d_model, identity.vocab_size)
        probe_ok = isinstance(identity.norm_probe, list) and all(
            isinstance(v, int | float) and np.isfinite(v) for v in identity.norm_probe
        )
        if not all(type(v) is int and v > 0 for v in ints) or not probe_ok:
            raise LensFileError("lens config: 'model' has malformed fields")
        if not isinstance(identity.family, str) or not isinstance(identity.name, str):
            raise LensFileError("lens config: 'model' has malformed fields")
        return identity

    def describe(self) -> str:
        name = f"{self.name[:80]}: " if self.name else ""
        return (
            f"{name}{self.family[:40]}, {self.num_layers} blocks, d_model {self.d_model}, "
            f"vocabulary {self.vocab_size}"
        )


def probe_indices(d_model: int) -> np.ndarray:
    return np.linspace(0, d_model - 1, PROBE_DIMS).round().astype(np.int64)


def check_same_model(lens: ModelIdentity, model: ModelIdentity) -> None:
    """Refuse a lens made for another model (one line naming both)."""
    shape = (lens.family, lens.num_layers, lens.d_model, lens.vocab_size)
    if shape != (model.family, model.num_layers, model.d_model, model.vocab_size):
        raise LensFileError(
            f"the lens was made for another model ({lens.describe()}), not this one "
            f"({model.describe()})"
        )
    if lens.norm_probe and model.norm_probe:
        a, b = np.array(lens.norm_probe), np.array(model.norm_probe)
        if a.shape != b.shape or not np.allclose(a, b, rtol=2e-2, atol=2e-3):
            raise LensFileError(
                f"the lens was made for another model of the same shape ({lens.describe()}): "
                "its final norm's weights differ from this model's"
            )
