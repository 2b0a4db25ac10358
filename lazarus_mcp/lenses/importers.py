"""Importing the published lens formats into LENS_DIR; the only module that needs torch.

- A tuned-lens directory (tuned-lens 0.2.0 ``TunedLens.save``): ``config.json``
  (``d_model``, ``num_hidden_layers``, ``bias``, ``lens_type``, ``base_model_name_or_path``,
  ``unembed_hash``) and ``params.pt``, a state dict of ``{i}.weight`` [D, D] / ``{i}.bias`` [D]
  for ``i`` in 0..N-1, indexed like transformers' ``hidden_states``: 0 is the embedding output,
  ``i`` the output of block ``i - 1``. Our translator of block ``l`` is their ``l + 1``.
- A Jacobian-lens artifact (TransformerLens ``JacobianLens.save``, Anthropic's reference, the
  published lenses): a ``.pt`` of ``{"J": {layer: [D, D]}, "n_prompts", "source_layers",
  "d_model", "metadata"?}``, layers numbered as our blocks; or the reference's fit checkpoint
  (``jacobian_sum`` / ``n_done``), whose mean is the lens.

``.pt`` files are pickles: they are read only with ``torch.load(weights_only=True)``, whose
unpickler builds tensors and plain containers and refuses every other global, so a file with a
payload is refused before anything in it runs. Each file is first checked to be a regular file
under a size cap. Shapes, layer counts, the target layer and non-finite values are checked
against the model the lens is imported for; anything wrong is one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lazarus_mcp.lenses.identity import ModelIdentity
from lazarus_mcp.lenses.lens_dir import LensConfig, LensFile, check_tensors
from lazarus_mcp.lenses.safetensors_io import LensFileError, check_regular

MAX_PT_BYTES = 4 * 2**30
MAX_JSON_BYTES = 2**20


def _torch() -> Any:
    # Our console scripts hide torch from transformers (runtime/process.py); importing a
    # published lens is the one place it is wanted.
    if sys.modules.get("torch", sys) is None:
        del sys.modules["torch"]
    try:
        import torch
    except ImportError as exc:
        raise LensFileError(
            "importing a .pt lens needs PyTorch (pip install 'lazarus-mcp[bench]')"
        ) from exc
    return torch


def load_pt(path: Path) -> Any:
    """A ``.pt`` file's tensors and plain values; never runs pickled code."""
    check_regular(path, MAX_PT_BYTES)
    torch = _torch()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds pickled objects other than tensors (possibly code)"
        raise LensFileError(f"refused {path.name}: {first[:200]}") from exc


def _array(value: Any, name: str) -> np.ndarray:
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        raise LensFileError(f"{name} is not a tensor")
    return value.detach().to(torch.float32).cpu().numpy()


def _check_model(d_model: int, num_layers: int, model: ModelIdentity, what: str) -> None:
    if d_model != model.d_model or num_layers != model.num_layers:
        raise LensFileError(
            f"the {what} is for a model with {num_layers} blocks and d_model {d_model}, "
            f"not this one ({model.describe()})"
        )


def import_tuned_lens(src: Path, model: ModelIdentity) -> LensFile:
    """A tuned-lens directory for ``model`` as a LensFile (not yet written)."""
    config_path, params_path = src / "config.json", src / "params.pt"
    check_regular(config_path, MAX_JSON_BYTES)
    try:
        raw = json.loads(config_path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise LensFileError("the tuned lens's config.json is not JSON") from exc
    if not isinstance(raw, dict):
        raise LensFileError("the tuned lens's config.json is not an object")
    if raw.get("lens_type", "linear_tuned_lens") != "linear_tuned_lens":
        raise LensFileError(f"unsupported tuned-lens type {raw.get('lens_type')!r:.60}")
    d_model, slots = raw.get("d_model"), raw.get("num_hidden_layers")
    if type(d_model) is not int or type(slots) is not int:
        raise LensFileError("the tuned lens's config.json lacks d_model or num_hidden_layers")
    _check_model(d_model, slots, model, "tuned lens")
    state = load_pt(params_path)
    if not isinstance(state, dict):
        raise LensFileError("params.pt is not a state dict")
    has_bias = raw.get("bias", True) is not False
    expected = {f"{i}.weight" for i in range(slots)} | (
        {f"{i}.bias" for i in range(slots)} if has_bias else set()
    )
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)[0]
        raise LensFileError(
            f"params.pt does not hold {slots} translators (first mismatch: {str(odd)[:60]})"
        )
    weights: dict[int | None, np.ndarray] = {}
    biases: dict[int | None, np.ndarray] = {}
    for slot in range(slots):
        key: int | None = None if slot == 0 else slot - 1
        weights[key] = _array(state[f"{slot}.weight"], f"{slot}.weight")
        bias = state.get(f"{slot}.bias")
        biases[key] = _array(bias, f"{slot}.bias") if has_bias else np.zeros(d_model, np.float32)
    provenance = {
        "imported_from": "tuned-lens",
        "source": str(src),
        "base_model_name_or_path": str(raw.get("base_model_name_or_path", ""))[:300],
        "base_model_revision": raw.get("base_model_revision"),
        "unembed_hash": raw.get("unembed_hash"),
    }
    config = LensConfig(
        kind="tuned",
        num_layers=model.num_layers,
        d_model=d_model,
        layers=list(range(slots - 1)),
        model=model,
        embedding=True,
        provenance=provenance,
    )
    lens = LensFile(config, None, weights, biases)
    check_tensors(config, _named(lens))
    return lens


def _named(lens: LensFile) -> dict[str, np.ndarray]:
    def key(k: int | None) -> str:
        return "embed" if k is None else str(k)

    if lens.config.kind == "jacobian":
        return {f"jacobian.{key(k)}": v for k, v in lens.weights.items()}
    named = {f"translator.{key(k)}.weight": v for k, v in lens.weights.items()}
    named.update({f"translator.{key(k)}.bias": v for k, v in lens.biases.items()})
    return named


def _plain(value: Any, depth: int = 0) -> Any:
    """Metadata reduced to JSON values (tensors and odd types dropped)."""
    if depth > 8:
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value if not isinstance(value, str) else value[:500]
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in list(value)[:100]]
    if isinstance(value, dict):
        return {str(k)[:100]: _plain(v, depth + 1) for k, v in list(value.items())[:100]}
    return None


def import_jacobian_lens(src: Path, model: ModelIdentity) -> LensFile:
    """A Jacobian-lens artifact (or reference fit checkpoint) for ``model``."""
    payload = load_pt(src)
    if not isinstance(payload, dict):
        raise LensFileError(f"{src.name} is not a Jacobian-lens artifact")
    if "J" in payload:
        matrices, count = payload["J"], payload.get("n_prompts", 0)
    elif "jacobian_sum" in payload:
        count = payload.get("n_done", payload.get("n_prompts", 0))
        if type(count) is not int or count <= 0:
            raise LensFileError(f"{src.name} is a fit checkpoint with no prompts counted")
        matrices = {k: v / count for k, v in dict(payload["jacobian_sum"]).items()}
    else:
        raise LensFileError(f"{src.name} has neither 'J' nor 'jacobian_sum': not a Jacobian lens")
    if not isinstance(matrices, dict) or not matrices:
        raise LensFileError(f"{src.name} holds no Jacobian matrices")
    metadata = _plain(payload.get("metadata")) or {}
    target = metadata.get("target_layer", payload.get("target_layer"))
    if target is not None and target != model.num_layers - 1:
        raise LensFileError(
            f"the lens was fitted against block {target}, not this model's last block "
            f"{model.num_layers - 1}"
        )
    d_model = payload.get("d_model", model.d_model)
    if type(d_model) is not int:
        raise LensFileError("the artifact's d_model is not an integer")
    layers = []
    for layer in matrices:
        if type(layer) is not int or not 0 <= layer < model.num_layers - 1:
            raise LensFileError(
                f"the artifact has a matrix for layer {str(layer)[:20]}, outside this model's "
                f"blocks 0..{model.num_layers - 2}"
            )
        layers.append(layer)
    if d_model != model.d_model:
        raise LensFileError(
            f"the artifact is for d_model {d_model}, not this model ({model.describe()})"
        )
    weights: dict[int | None, np.ndarray] = {
        layer: _array(matrices[layer], f"J[{layer}]") for layer in sorted(layers)
    }
    provenance = {
        "imported_from": "jacobian-lens artifact",
        "source": str(src),
        "n_prompts": count if type(count) is int else None,
        "metadata": metadata,
    }
    config = LensConfig(
        kind="jacobian",
        num_layers=model.num_layers,
        d_model=d_model,
        layers=sorted(layers),
        model=model,
        provenance=provenance,
    )
    lens = LensFile(config, None, weights, {})
    check_tensors(config, _named(lens))
    return lens


def import_lens(src: Path, model: ModelIdentity) -> LensFile:
    """Either format, told apart by what ``src`` is."""
    if src.is_dir():
        if not (src / "params.pt").exists():
            raise LensFileError(f"{src.name} is a directory without params.pt: not a tuned lens")
        return import_tuned_lens(src, model)
    return import_jacobian_lens(src, model)
