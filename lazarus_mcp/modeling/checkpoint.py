"""Finding a checkpoint: a local directory, a GGUF file (or a directory holding one), the bundled
demo, or a Hugging Face id (local cache, the hub when reachable), and reading its config. No MLX
here."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

from lazarus_mcp.errors import ModelNotFoundError
from lazarus_mcp.runtime.limits import check_model_string, current

DEMO_MODEL = "demo"
GGUF_SUFFIX = ".gguf"
MAX_LISTED = 4096
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
    check_model_string(model_id)
    by_name = _allowed(model_id)
    try:
        # A model not allowed by its name is never fetched from the hub to see its path.
        path = _find(model_id, download and by_name)
    except OSError as exc:  # a name too long for the file system, a loop of links...
        raise ModelNotFoundError(f"'{model_id[:200]}' is not a model ({exc.strerror})") from exc
    except ModelNotFoundError:
        if not by_name:
            raise _not_allowed(model_id) from None
        raise
    if not by_name and not _allowed(str(path)):
        raise _not_allowed(model_id)
    return path


def _find(model_id: str, download: bool) -> Path:
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
    if path.suffix.lower() == GGUF_SUFFIX and not path.is_dir():
        return path.resolve()  # read as an untrusted file by gguf_header before anything else
    if not path.is_dir():
        raise ModelNotFoundError(f"'{model_id}' is a file, not a model directory or a .gguf file")
    if not (path / "config.json").is_file():
        single = _single_gguf(path)
        if single is not None:
            return single.resolve()
        raise ModelNotFoundError(
            f"'{model_id}' is not a model directory: it has no config.json (nor one .gguf file)"
        )
    return path.resolve()


def _single_gguf(path: Path) -> Path | None:
    """The one ``.gguf`` file in a directory without config.json (llama.cpp's and LM Studio's
    layout), or None; several are ambiguous and refused by name."""
    found = []
    with os.scandir(path) as entries:
        for count, entry in enumerate(entries):
            if count > MAX_LISTED:
                break
            if entry.name.lower().endswith(GGUF_SUFFIX):
                found.append(entry.name)
    if len(found) > 1:
        names = ", ".join(sorted(found)[:4])
        raise ModelNotFoundError(
            f"'{str(path)[:200]}' holds {len(found)} .gguf files ({names}); name one of them"
        )
    return path / found[0] if found else None


def read_config(path: Path) -> dict[str, Any]:
    """config.json, read as an untrusted file (regular, capped, not too deep)."""
    from lazarus_mcp.modeling.safe_files import read_config_file

    return read_config_file(path)


def _allowed(name: str) -> bool:
    """Whether ``--allow-model`` patterns (fnmatch; none: everything) admit ``name``."""
    patterns = current().allowed_models
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _not_allowed(model_id: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model '{model_id[:200]}' is not allowed on this server (see its --allow-model list)"
    )
