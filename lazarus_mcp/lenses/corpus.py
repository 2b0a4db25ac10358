"""The text a lens is fitted on: a prompts file, or text the model samples itself.

A prompts file is one prompt per non-empty line, or JSON Lines of ``{"text": ...}``; it must be a
regular UTF-8 file under a size cap (``--prompts-file /dev/zero`` is refused, not read forever).
Prompts are tokenized as TransformerLens's ``to_tokens`` does, the tokenizer's BOS then the text
without special tokens, unless ``raw``: the text's own tokens only.

``--self-generated N``: N sequences sampled from the model itself at temperature 1 from its BOS
token, all N in one batch through the model's own KV cache, seeded. A tuned lens trained on them
needs no corpus, and they are text the model finds typical, which is the distribution the lens
is meant for.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lazarus_mcp.errors import InvalidRequestError

MAX_PROMPTS_BYTES = 64 * 2**20


def read_prompts(path: Path, cap: int = MAX_PROMPTS_BYTES) -> list[str]:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidRequestError(f"cannot read the prompts file ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRequestError("the prompts file is not a regular file")
    if info.st_size > cap:
        raise InvalidRequestError(f"the prompts file is larger than {cap:,} bytes")
    try:
        text = path.read_bytes()[: cap + 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("the prompts file is not UTF-8 text") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InvalidRequestError(f"line {number} of the prompts file has no 'text' string")
            prompts.append(record["text"])
        lines = prompts
    if not lines:
        raise InvalidRequestError("the prompts file holds no prompts")
    return lines


def bos_id(tokenizer: Any) -> int | None:
    value = getattr(tokenizer, "bos_token_id", None)
    return value if isinstance(value, int) else None


def encode(tokenizer: Any, text: str, raw: bool) -> list[int]:
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    bos = bos_id(tokenizer)
    if raw or bos is None:
        return ids
    return [bos, *ids]


def chunked(token_lists: Sequence[Sequence[int]], length: int, bos: int | None) -> list[list[int]]:
    """Equal-length training sequences: the prompts' tokens concatenated and cut every
    ``length`` tokens (each chunk starting with BOS where the model has one), as tuned-lens
    chunks its corpus."""
    body = length - (1 if bos is not None else 0)
    stream = [t for ids in token_lists for t in ids if t != bos]
    chunks = []
    for start in range(0, len(stream) - body + 1, body):
        piece = stream[start : start + body]
        chunks.append(([bos] if bos is not None else []) + piece)
    return chunks


def sample_sequences(model: Any, count: int, length: int, start: int, seed: int) -> list[list[int]]:
    """``count`` sequences of ``length`` tokens sampled from the model, beginning with ``start``."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    key = mx.random.key(seed)
    cache = make_prompt_cache(model)
    tokens = mx.full((count, 1), start, dtype=mx.int32)
    out = [tokens]
    logits = model(tokens, cache=cache)[:, -1, :]
    for _ in range(length - 1):
        key, sub = mx.random.split(key)
        tokens = mx.random.categorical(logits.astype(mx.float32), key=sub)[:, None]
        out.append(tokens)
        logits = model(tokens.astype(mx.int32), cache=cache)[:, -1, :]
        mx.eval(logits)
    sampled: list[list[int]] = np.array(mx.concatenate(out, axis=1)).tolist()
    return sampled
