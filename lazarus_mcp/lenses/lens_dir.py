"""LENS_DIR: a fitted lens on disk, ``config.json`` + ``lens.safetensors``, and its loader.

One format for both learned lenses, whoever made them (``fit-jacobian``, ``train-tuned``,
``import``):

- ``config.json``: ``format`` ("lazarus-lens"), ``version``, ``kind`` ("tuned" | "jacobian"),
  ``num_layers`` (blocks of the base model), ``d_model``, ``layers`` (the blocks the lens maps;
  every other block is read as the logit lens), ``embedding`` (a tuned lens may also map the
  embedding output), ``model`` (the base model's identity, :mod:`identity`), ``provenance`` (how
  it was made) and ``held_out`` (per-layer KL to the model's output, logit lens vs this lens).
- ``lens.safetensors``: tuned ``translator.{l}.weight`` [D, D] and ``translator.{l}.bias`` [D]
  (``l`` a block, or ``embed``); Jacobian ``jacobian.{l}`` [D, D]. float32.

The loader assumes the files are hostile: a path outside the allowed directory, a non-regular
file, an oversized or lying header (``safetensors_io``), wrong shapes, missing or extra tensors,
NaN or infinite weights and a lens for another model are each refused with one line. Pickles are
never read (``import`` converts them with ``torch.load(weights_only=True)``).
No MLX here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lazarus_mcp.lenses.identity import ModelIdentity
from lazarus_mcp.lenses.safetensors_io import LensFileError, read_tensors, write_tensors

FORMAT = "lazarus-lens"
VERSION = 1
CONFIG_NAME = "config.json"
TENSORS_NAME = "lens.safetensors"
MAX_CONFIG_BYTES = 1 * 2**20
# A lens is at most num_layers D x D float32 matrices plus biases: 2 GiB covers D = 8192 at 8
# layers or D = 4096 at 32; a larger file is refused before it is read.
MAX_TENSOR_BYTES = 2 * 2**30
Kind = Literal["tuned", "jacobian"]
EMBED = "embed"


@dataclass
class HeldOut:
    """KL(model output || lens) per block on text the lens never saw, in nats."""

    tokens: int
    layers: list[int]
    logit_kl: list[float]
    lens_kl: list[float]


@dataclass
class LensConfig:
    kind: Kind
    num_layers: int
    d_model: int
    layers: list[int]
    model: ModelIdentity
    embedding: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    held_out: HeldOut | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


@dataclass
class LensFile:
    """A loaded lens: its config and float32 tensors, keyed by block (None: the embedding)."""

    config: LensConfig
    path: Path | None
    weights: dict[int | None, np.ndarray]  # tuned: W [D, D]; jacobian: J [D, D]
    biases: dict[int | None, np.ndarray]  # tuned only


def _key(layer: int | None) -> str:
    return EMBED if layer is None else str(layer)


def save_lens(path: Path, lens: LensFile) -> None:
    """Write LENS_DIR (created if missing): tensors first, then the config that names them."""
    path.mkdir(parents=True, exist_ok=True)
    prefix = "translator" if lens.config.kind == "tuned" else "jacobian"
    tensors: dict[str, np.ndarray] = {}
    for layer, weight in lens.weights.items():
        name = f"{prefix}.{_key(layer)}"
        tensors[f"{name}.weight" if lens.config.kind == "tuned" else name] = weight
    for layer, bias in lens.biases.items():
        tensors[f"translator.{_key(layer)}.bias"] = bias
    write_tensors(path / TENSORS_NAME, tensors)
    tmp = path / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(lens.config.to_json(), indent=2) + "\n")
    os.replace(tmp, path / CONFIG_NAME)


def _inside(path: Path, root: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def resolve_lens_dir(path: str | Path, allowed: Path | None = None) -> Path:
    """The lens directory, refused if it is not one or (with ``allowed``) lies outside it.

    ``allowed``: the only directory lenses may come from (``lazarus-mcp --lens-dir``); a path
    that resolves outside it, through ``..`` or a symlink, is refused. Relative paths are
    relative to it."""
    candidate = Path(path)
    if allowed is not None:
        if not candidate.is_absolute():
            candidate = allowed / candidate
        if not _inside(candidate, allowed):
            raise LensFileError(
                f"lens path {str(path)[:200]!r} is outside the allowed lens directory"
            )
    if not candidate.is_dir():
        raise LensFileError(
            f"unknown lens {str(path)[:200]!r}: neither 'logit' nor a lens directory"
        )
    for name in (CONFIG_NAME, TENSORS_NAME):
        if not _inside(candidate / name, candidate):
            raise LensFileError(f"{name} in the lens directory points outside it; refused")
    return candidate


def _int(raw: dict[str, Any], key: str, low: int, high: int) -> int:
    value = raw.get(key)
    if type(value) is not int or not low <= value <= high:
        raise LensFileError(f"lens config: '{key}' must be an integer in {low}..{high}")
    return value


def _held_out(raw: object) -> HeldOut | None:
    if raw is None:
        return None
    try:
        held = HeldOut(**raw) if isinstance(raw, dict) else None
    except TypeError:
        held = None
    if held is None or not (len(held.layers) == len(held.logit_kl) == len(held.lens_kl)):
        raise LensFileError("lens config: 'held_out' is malformed")
    return held


def parse_config(raw: object) -> LensConfig:
    """The config, each field checked; one line naming the first bad field."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise LensFileError(f"not a lens directory: config.json's format is not '{FORMAT}'")
    if raw.get("version") != VERSION:
        raise LensFileError(f"lens format version {raw.get('version')!r:.20} is not supported")
    kind = raw.get("kind")
    if kind not in ("tuned", "jacobian"):
        raise LensFileError(f"lens kind {kind!r:.40} is neither 'tuned' nor 'jacobian'")
    num_layers = _int(raw, "num_layers", 1, 4096)
    d_model = _int(raw, "d_model", 1, 65536)
    layers = raw.get("layers")
    if not isinstance(layers, list) or not all(
        type(i) is int and 0 <= i < num_layers for i in layers
    ):
        raise LensFileError("lens config: 'layers' must list blocks 0..num_layers-1")
    if len(set(layers)) != len(layers):
        raise LensFileError("lens config: 'layers' lists a block twice")
    provenance = raw.get("provenance", {})
    if not isinstance(provenance, dict):
        raise LensFileError("lens config: 'provenance' must be an object")
    return LensConfig(
        kind=kind,
        num_layers=num_layers,
        d_model=d_model,
        layers=sorted(layers),
        model=ModelIdentity.from_json(raw.get("model")),
        embedding=raw.get("embedding") is True,
        provenance=provenance,
        held_out=_held_out(raw.get("held_out")),
    )


def _read_config(path: Path) -> LensConfig:
    file = path / CONFIG_NAME
    if not file.is_file():
        raise LensFileError(f"{path.name} has no {CONFIG_NAME}; not a lens directory")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise LensFileError(f"{CONFIG_NAME} is larger than {MAX_CONFIG_BYTES:,} bytes; refused")
    try:
        raw = json.loads(file.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise LensFileError(f"{CONFIG_NAME} in the lens directory is not JSON") from exc
    return parse_config(raw)


def _expected(config: LensConfig) -> dict[str, tuple[int, ...]]:
    d = config.d_model
    keys: list[int | None] = list(config.layers)
    if config.embedding:
        keys.append(None)
    if config.kind == "jacobian":
        return {f"jacobian.{_key(k)}": (d, d) for k in keys}
    shapes: dict[str, tuple[int, ...]] = {}
    for k in keys:
        shapes[f"translator.{_key(k)}.weight"] = (d, d)
        shapes[f"translator.{_key(k)}.bias"] = (d,)
    return shapes


def check_tensors(config: LensConfig, tensors: dict[str, np.ndarray]) -> None:
    """The tensors are exactly those the config names, of the right shapes, all finite."""
    expected = _expected(config)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected tensor {extra[0][:60]}"
        raise LensFileError(f"the lens's tensors do not match its config ({what})")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise LensFileError(
                f"lens tensor {name} has shape {list(tensors[name].shape)}, expected {list(shape)}"
            )
        if not np.isfinite(tensors[name]).all():
            raise LensFileError(f"lens tensor {name} holds NaN or infinite values; refused")


def load_lens(path: str | Path, allowed: Path | None = None) -> LensFile:
    """A lens directory, checked; :class:`LensFileError` (one line) for anything wrong."""
    root = resolve_lens_dir(path, allowed)
    config = _read_config(root)
    tensors = read_tensors(root / TENSORS_NAME, MAX_TENSOR_BYTES)
    check_tensors(config, tensors)
    keys: list[int | None] = [*config.layers, *([None] if config.embedding else [])]
    if config.kind == "jacobian":
        weights = {k: tensors[f"jacobian.{_key(k)}"] for k in keys}
        return LensFile(config, root, weights, {})
    weights = {k: tensors[f"translator.{_key(k)}.weight"] for k in keys}
    biases = {k: tensors[f"translator.{_key(k)}.bias"] for k in keys}
    return LensFile(config, root, weights, biases)


__all__ = ["LensFileError", "load_lens", "save_lens"]
