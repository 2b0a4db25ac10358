"""Prompts from the command line and from a file: text lines or JSON Lines with ``prompt``."""

from __future__ import annotations

import json
from pathlib import Path


class PromptsFileError(ValueError):
    pass


def read_prompts_file(path: Path) -> list[str]:
    """One prompt per non-blank line; if the first one is a JSON object, every line must be a
    JSON object with a string ``prompt`` (JSON Lines), so prompts may hold newlines."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptsFileError(f"cannot read {path}: {exc}") from exc
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise PromptsFileError(f"{path} holds no prompt")
    if not _is_object(lines[0][1]):
        return [line for _, line in lines]
    prompts = []
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptsFileError(f"{path} line {n}: not JSON ({exc.msg})") from exc
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str):
            raise PromptsFileError(f"{path} line {n}: needs a string field 'prompt'")
        prompts.append(prompt)
    return prompts


def _is_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def numbered(path: Path, index: int, count: int) -> Path:
    """``path`` for one result of several: ``grid.png`` -> ``grid-2.png`` (1-based)."""
    if count == 1:
        return path
    return path.with_name(f"{path.stem}-{index + 1}{path.suffix}")
