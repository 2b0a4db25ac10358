"""Reading a checkpoint an agent pointed at, without trusting it.

A prompt-injected agent may name any directory; the files in it may be anything. Before this
module, a ``tokenizer.json`` that was a symlink to ``/dev/zero`` was read until the process held
8 GB, and one that was a FIFO hung the MLX worker (and every later call) forever. So every file
the loaders will open is checked first: a regular file (also through symlinks), inside the
checkpoint (a Hugging Face snapshot's links into its own ``blobs/`` are inside), and under a size
cap; config.json is parsed here with a nesting cap (100,000-deep JSON is a ``RecursionError``).
No MLX here.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from lazarus_mcp.errors import ModelLoadError
from lazarus_mcp.runtime.limits import Limits, current

# Checkpoints hold a handful of files; a directory of thousands is not one.
MAX_ENTRIES = 4096
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def checkpoint_root(path: Path) -> Path:
    """The folder the checkpoint's files may live in: a hub snapshot's files are links into the
    repository's ``blobs/``, two levels up; a plain directory is its own root."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent
    return path


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _cap_for(name: str, limits: Limits) -> int | None:
    if name.endswith(".safetensors"):
        return None  # read by mlx through its own header checks (``weights.py``)
    if name == "config.json":
        return limits.max_config_bytes
    if name in TEMPLATE_FILES:
        return limits.max_template_bytes
    return limits.max_tokenizer_bytes


def check_file(path: Path, root: Path, cap: int | None) -> int:
    """The size of ``path`` if it is a regular file inside ``root`` and within ``cap``."""
    real = os.path.realpath(path)
    if not _inside(real, os.path.realpath(root)):
        raise ModelLoadError(f"{path.name} in the checkpoint points outside it; refused")
    try:
        info = os.stat(real)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path.name} in the checkpoint ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f"{path.name} in the checkpoint is not a regular file; refused")
    if cap is not None and info.st_size > cap:
        raise ModelLoadError(
            f"{path.name} in the checkpoint has {info.st_size:,} bytes, more than the limit "
            f"of {cap:,}"
        )
    return int(info.st_size)


def check_checkpoint_files(path: Path, limits: Limits | None = None) -> None:
    """Every file at the checkpoint's top level (what mlx-lm and transformers may open) is a
    regular file inside the checkpoint, within its size cap."""
    limits = limits or current()
    root = checkpoint_root(path)
    try:
        entries = []
        with os.scandir(path) as found:
            for entry in found:
                entries.append(entry.name)
                if len(entries) > MAX_ENTRIES:
                    raise ModelLoadError(f"the checkpoint has more than {MAX_ENTRIES} files")
    except OSError as exc:
        raise ModelLoadError(f"cannot list the checkpoint ({exc.strerror})") from exc
    for name in entries:
        entry_path = path / name
        if entry_path.is_dir() and not entry_path.is_symlink():
            continue  # loaders read the top level only
        check_file(entry_path, root, _cap_for(name, limits))


def read_capped(
    path: Path, cap: int, error: type[Exception] = ModelLoadError, name: str | None = None
) -> bytes:
    """The bytes of a regular file, at most ``cap``; a device, FIFO or directory is refused
    (opened non-blocking, so a FIFO swapped in cannot hang the reader before it is refused).

    The one capped read of an untrusted file: a checkpoint's files here, ``--prompts-file`` in
    the CLI. ``error`` is what a refusal raises and ``name`` what it calls the file (default:
    the checkpoint's file by its name)."""
    what = name or f"{path.name} in the checkpoint"
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{what} is not a regular file; refused")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(cap + 1)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise error(f"{what} is larger than {cap:,} bytes")
    return data


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(data: bytes, what: str, max_depth: int) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"corrupt {what}: not UTF-8 text") from exc
    if nesting_depth(text) > max_depth:
        raise ModelLoadError(f"corrupt {what}: nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"corrupt {what}: {str(exc).splitlines()[0][:200]}") from exc


def read_config_file(path: Path, limits: Limits | None = None) -> dict[str, Any]:
    """config.json of the checkpoint in ``path``, read safely (see the module docstring)."""
    limits = limits or current()
    file = path / "config.json"
    check_file(file, checkpoint_root(path), limits.max_config_bytes)
    try:
        data = read_capped(file, limits.max_config_bytes)
    except OSError as exc:
        raise ModelLoadError(f"corrupt config.json in {path}: {exc.strerror}") from exc
    config = parse_json(data, f"config.json in {path}", limits.max_config_depth)
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"config.json in {path} has no model_type")
    return config
