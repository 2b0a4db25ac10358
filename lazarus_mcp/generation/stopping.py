"""When a generation ends: an end-of-sequence token, a stop string, or max_new_tokens.

The end-of-sequence tokens are every id the checkpoint names: ``eos_token_id`` of config.json
(and of a container's text config), of generation_config.json (what ``transformers`` and
``mlx-lm`` stop on; chat models often list their end-of-turn token only there), and the
tokenizer's own. Stop strings are matched in the decoded text, so a string the tokenizer splits
across tokens (" Paris." as " Paris" + ".") still stops the run; the text is cut before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lazarus_mcp.modeling.safe_files import (
    check_file,
    checkpoint_root,
    parse_json,
    read_capped,
)
from lazarus_mcp.runtime.limits import current


def _ids(value: Any) -> set[int]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int) and not isinstance(v, bool)}
    return set()


def _json_file(path: Path) -> dict[str, Any]:
    """A small JSON file of the checkpoint, read as untrusted; {} when absent or unreadable."""
    if not path.is_file():
        return {}
    limits = current()
    try:
        check_file(path, checkpoint_root(path.parent), limits.max_config_bytes)
        data = parse_json(
            read_capped(path, limits.max_config_bytes), path.name, limits.max_config_depth
        )
    except Exception:  # a malformed optional file only loses its ids
        return {}
    return data if isinstance(data, dict) else {}


def eos_token_ids(model_path: str, tokenizer: Any) -> frozenset[int]:
    """Every end-of-sequence id the checkpoint (config, generation config, tokenizer) names."""
    found: set[int] = set()
    directory = Path(model_path)
    if directory.is_dir():
        config = _json_file(directory / "config.json")
        text = config.get("text_config")
        found |= _ids(config.get("eos_token_id"))
        if isinstance(text, dict):
            found |= _ids(text.get("eos_token_id"))
        found |= _ids(_json_file(directory / "generation_config.json").get("eos_token_id"))
    found |= _ids(getattr(tokenizer, "eos_token_id", None))
    return frozenset(found)


@dataclass
class StopWatch:
    """Finds the first stop string in the generated text as it grows."""

    stops: list[str]
    _searched: int = field(default=0, repr=False)

    def find(self, text: str) -> tuple[int, str] | None:
        """(index, string) of the earliest stop string in ``text``, or None.

        Only the part that could hold a new match is searched: everything after the text
        already searched, less the longest stop string's length (a match may straddle)."""
        if not self.stops:
            return None
        longest = max(len(s) for s in self.stops)
        start = max(0, self._searched - longest + 1)
        self._searched = len(text)
        hits = [(i, s) for s in self.stops if (i := text.find(s, start)) >= 0]
        return min(hits) if hits else None
