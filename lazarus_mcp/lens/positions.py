"""Which prompt positions to read: ``last``, ``all``, or indices (negative from the end)."""

from __future__ import annotations

from typing import Literal

from lazarus_mcp.errors import InvalidRequestError

PositionSpec = Literal["last", "all"] | list[int]


def select_positions(spec: PositionSpec, length: int) -> list[int]:
    """The sorted, distinct positions ``spec`` names in a prompt of ``length`` tokens."""
    if spec == "last":
        return [length - 1]
    if spec == "all":
        return list(range(length))
    chosen = set()
    for index in spec:
        resolved = index + length if index < 0 else index
        if not 0 <= resolved < length:
            raise InvalidRequestError(
                f"position {index} is out of range: the prompt has {length} tokens "
                f"(use 0..{length - 1}, or -1..-{length} from the end)"
            )
        chosen.add(resolved)
    return sorted(chosen)


def parse_positions(text: str) -> PositionSpec:
    """``last``, ``all`` or comma-separated integers such as ``0,3,-1`` (the CLI's spelling)."""
    cleaned = text.strip().lower()
    if cleaned in ("last", "all"):
        return "last" if cleaned == "last" else "all"
    try:
        positions = [int(part) for part in cleaned.replace(" ", "").split(",") if part]
    except ValueError:
        positions = []
    if not positions:
        raise InvalidRequestError(
            f"positions takes 'last', 'all' or comma-separated integers such as 0,3,-1, "
            f"not {text!r}"
        )
    return positions
