"""Finding a checkpoint: a local directory, the bundled demo, or a Hugging Face id (local cache,
the hub when reachable), and reading its config. No MLX here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lazarus_mcp.errors import ModelLoadError, ModelNotFoundError

DEMO_MODEL = "demo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = [
    "*.json",
    "*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]


def demo_path() -> Path:
    return Path(__file__).resolve().parent.parent / "demo"


class NotCachedError(ModelNotFoundError):
    """A Hugging Face id that is not in the local cache (asked with ``download=False``)."""


def _hub_snapshot(model_id: str, download: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=_HUB_FILES, local_files_only=True))
    except Exception as cached_exc:
        if not download:
            raise NotCachedError(f"model '{model_id}' is not in the local cache") from cached_exc
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        if offline:
            raise ModelNotFoundError(
                f"model '{model_id}' is not in the local Hugging Face cache and the hub is "
                "offline (HF_HUB_OFFLINE): download it first or pass a local directory"
            ) from cached_exc
    try:
        return Path(snapshot_download(model_id, allow_patterns=_HUB_FILES))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model '{model_id}' is not cached locally and could not be downloaded from the "
            f"Hugging Face hub ({type(exc).__name__}); check the id or pass a local directory"
        ) from exc


def resolve_model_path(model_id: str, download: bool = True) -> Path:
    """The real path of the checkpoint directory a path, ``demo`` or a Hugging Face id names.

    A hub id resolves to its snapshot directory, which names the revision, so one checkpoint
    has one path however it is spelled. ``download=False`` raises :class:`NotCachedError`
    instead of reaching the hub.
    """
    if not model_id or not model_id.strip():
        raise ModelNotFoundError("no model given: pass a directory, a Hugging Face id or 'demo'")
    if model_id == DEMO_MODEL:
        path = demo_path()
    else:
        path = Path(model_id).expanduser()
        if not path.exists():
            if not _HUB_ID.match(model_id):
                raise ModelNotFoundError(
                    f"model '{model_id}' not found: no such directory, and not a Hugging Face "
                    "id (org/name)"
                )
            path = _hub_snapshot(model_id, download)
    if not path.is_dir():
        raise ModelNotFoundError(f"'{model_id}' is a file, not a model directory")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"'{model_id}' is not a model directory: it has no config.json")
    return path.resolve()


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"corrupt config.json in {path}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"config.json in {path} has no model_type")
    return config
