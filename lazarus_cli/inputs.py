"""Prompts from the command line and from a file: text lines or JSON Lines with ``prompt``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lazarus_mcp.modeling.safe_files import read_capped

# Far beyond any batch the limits let through (prompts of at most 100,000 characters each);
# ``/dev/zero`` was read until memory ran out.
MAX_PROMPTS_FILE_BYTES = 64 * 2**20


class PromptsFileError(ValueError):
    pass


def read_prompts_file(path: Path) -> list[str]:
    """One prompt per non-blank line; if the first one is a JSON object, every line must be a
    JSON object with a string ``prompt`` (JSON Lines), so prompts may hold newlines."""
    try:
        data = read_capped(
            path.expanduser(), MAX_PROMPTS_FILE_BYTES, PromptsFileError, f"the prompts file {path}"
        )
        text = data.decode("utf-8")
    except OSError as exc:
        raise PromptsFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PromptsFileError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from exc
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


def undecodable_argument(argv: list[str]) -> str | None:
    """Why a command-line argument cannot be used, if one is not UTF-8.

    Python hands such bytes on as lone surrogates (``\\udcff``), which the tokenizer rejects
    with a ``TypeError`` and no JSON encoder can write: refused before the command runs."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = os.fsencode(arg)
            shown = repr(raw[:60])[1:] + ("..." if len(raw) > 60 else "")
            byte = ord(arg[exc.start]) & 0xFF  # surrogateescape: U+DC80..U+DCFF is 0x80..0xFF
            return f"an argument is not UTF-8 text (byte 0x{byte:02x}): {shown}"
    return None
