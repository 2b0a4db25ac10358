"""Reading a residual stream through a learned lens: plain functions, then the model's own head.

- logit lens: ``head(h)``;
- tuned lens (Belrose et al. 2023): ``head(h + W_l h + b_l)`` (a zero translator is the logit
  lens; the residual form keeps float32 rounding of ``I + W`` out of the readout);
- Jacobian lens (Gurnee et al. 2026): ``head(J_l h)`` (``J_l = I`` is the logit lens).

``head`` is the model's final norm, unembedding and logit transform (``lens/head.py``), so
soft-capping and Gemma's norm are applied as the model applies them. The transform runs in
float32, as TransformerLens's readout and tuned-lens's do. Both lenses are affine,
``h -> h A^T + b``, which is what lets direct logit attribution decompose under them: each
component maps through ``A`` and the bias is one more component (``LoadedLens.linear_part``,
``lens/decompose.py``).
A block the lens does not map, and the last block always, is read as the logit lens.

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from lazarus_mcp.errors import UnsupportedModelError
from lazarus_mcp.lens.final_norm import probe_norm
from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.lenses.identity import ModelIdentity, probe_indices
from lazarus_mcp.lenses.lens_dir import LensFile

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel


def tuned_transform(hidden: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    h = hidden.astype(mx.float32)
    return h + h @ weight.T + bias


def jacobian_transform(hidden: mx.array, jacobian: mx.array) -> mx.array:
    return hidden.astype(mx.float32) @ jacobian.T


@dataclass
class LoadedLens:
    """A lens's maps as MLX float32 arrays; ``None`` keys the embedding output."""

    kind: str
    weights: dict[int | None, mx.array]
    biases: dict[int | None, mx.array]
    source: LensFile | None = None

    @classmethod
    def from_file(cls, lens: LensFile) -> LoadedLens:
        weights = {k: mx.array(v) for k, v in lens.weights.items()}
        biases = {k: mx.array(v) for k, v in lens.biases.items()}
        return cls(lens.config.kind, weights, biases, lens)

    def maps(self, layer: int | None) -> bool:
        return layer in self.weights

    def transform(self, hidden: mx.array, layer: int | None) -> mx.array:
        """The residual as the lens reads it at ``layer`` (unchanged where it maps nothing)."""
        if layer not in self.weights:
            return hidden
        if self.kind == "tuned":
            return tuned_transform(hidden, self.weights[layer], self.biases[layer])
        return jacobian_transform(hidden, self.weights[layer])

    def linear_part(self, layer: int | None) -> tuple[mx.array | None, mx.array | None]:
        """(A, b) with transform(h) = h A^T + b; (None, None) for the identity."""
        if layer not in self.weights:
            return None, None
        weight = self.weights[layer]
        if self.kind == "tuned":
            eye = mx.eye(weight.shape[0], dtype=mx.float32)
            return eye + weight, self.biases[layer]
        return weight, None


def readout(
    head: LensHead, hidden: mx.array, layer: int | None, lens: LoadedLens | None
) -> mx.array:
    """Logits [..., V] of the residual ``hidden`` [..., D] of ``layer`` under ``lens``
    (None: the logit lens)."""
    if lens is not None:
        hidden = lens.transform(hidden, layer)
    return head(hidden)


def model_identity(
    head: LensHead,
    family: str,
    num_layers: int,
    d_model: int,
    vocab: int,
    name: str,
    dtype: mx.Dtype,
) -> ModelIdentity:
    """The identity a lens records and is checked against (``identity.py``)."""
    try:
        gain = probe_norm(head.norm, d_model, dtype).weight
    except UnsupportedModelError:  # an odd width cannot be probed: the shape check remains
        return ModelIdentity(family, num_layers, d_model, vocab, name, [])
    picked = mx.take(gain, mx.array(probe_indices(d_model)))
    probe = [round(float(v), 6) for v in np.array(picked, dtype=np.float64)]
    return ModelIdentity(family, num_layers, d_model, vocab, name, probe)


def identity_of(loaded: LoadedModel) -> ModelIdentity:
    info = loaded.info
    name = Path(info.path).name if info.path else info.model_id
    return model_identity(
        loaded.head,
        info.family,
        info.num_layers,
        info.hidden_size,
        info.vocab_size,
        name,
        getattr(mx, info.compute_dtype),
    )


def open_lens(path: str | Path, loaded: LoadedModel, allowed: Path | None = None) -> LoadedLens:
    """A lens directory checked for this model (one-line refusals), ready to read."""
    from lazarus_mcp.lenses.identity import check_same_model
    from lazarus_mcp.lenses.lens_dir import load_lens

    lens = load_lens(path, allowed)
    check_same_model(lens.config.model, identity_of(loaded))
    return LoadedLens.from_file(lens)


@dataclass
class LensReader:
    """The engine's ``Lens`` seam, ``readout(h, layer) -> logits``, for any lens: the logit
    lens (``lens`` None) or a learned one, through the model's own head."""

    head: LensHead
    lens: LoadedLens | None = None

    def readout(self, hidden: mx.array, layer: int | None) -> mx.array:
        return readout(self.head, hidden, layer, self.lens)

    def describe(self) -> dict[str, object]:
        """``lens: {kind, path, fit}`` as every result reports it."""
        if self.lens is None or self.lens.source is None:
            return {"kind": "logit", "path": None, "fit": None}
        config = self.lens.source.config
        fit: dict[str, object] | None = None
        if config.held_out is not None:
            held = config.held_out
            fit = {
                "held_out_tokens": held.tokens,
                "mean_kl_logit": round(sum(held.logit_kl) / len(held.logit_kl), 4),
                "mean_kl_lens": round(sum(held.lens_kl) / len(held.lens_kl), 4),
            }
        path = str(self.lens.source.path) if self.lens.source.path else None
        return {"kind": config.kind, "path": path, "fit": fit}
