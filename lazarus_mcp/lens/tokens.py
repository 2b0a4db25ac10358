"""Tokens as the model sees them: display text and tracked-token resolution (prompt encoding,
which runs the checkpoint's chat template, is ``analyses/prompts.py``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lazarus_mcp.errors import TokenResolutionError
from lazarus_mcp.lens.interrupt import check_interrupt

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


@dataclass(frozen=True)
class EncodedPrompt:
    text_seen: str
    token_ids: list[int]
    chat_template_applied: bool

    def described(self, prompt: str, text: TokenText) -> dict[str, Any]:
        """What every result states about its prompt: as given, as the model saw it, its
        tokens, and the position the lens reads (the last)."""
        return {
            "prompt": prompt,
            "text_seen": self.text_seen,
            "chat_template_applied": self.chat_template_applied,
            "tokens": text.many(self.token_ids),
            "token_ids": self.token_ids,
            "position": len(self.token_ids) - 1,
        }


@dataclass(frozen=True)
class ResolvedToken:
    query: str
    token_id: int
    pieces: list[str]
    piece_ids: tuple[int, ...] = ()  # every piece's id when the query is several tokens

    @property
    def multi_token(self) -> bool:
        return len(self.pieces) > 1


@dataclass
class TokenText:
    """Turns token ids into the text a person should see, for one tokenizer.

    Single-token ``decode`` loses a SentencePiece token's leading space and splits multi-byte
    characters inconsistently, so the display is built from the vocabulary piece instead:
    byte-level pieces are mapped back to bytes, ``▁`` becomes a space, ``<0xNN>`` is its byte.
    """

    tokenizer: Any
    _cache: dict[int, str] = field(default_factory=dict)

    @cached_property
    def byte_level(self) -> bool:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        if decoder is None:
            return False
        try:
            state = json.loads(decoder.__getstate__())
        except (TypeError, ValueError, AttributeError):
            return "ByteLevel" in repr(decoder)
        return "ByteLevel" in json.dumps(state)

    @cached_property
    def special_ids(self) -> frozenset[int]:
        ids = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        ids.update(i for i, tok in decoder.items() if getattr(tok, "special", False))
        return frozenset(ids)

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self._display(token_id)
        return text

    def many(self, token_ids: list[int]) -> list[str]:
        return [self(i) for i in token_ids]

    def _display(self, token_id: int) -> str:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            # Embedding rows past the tokenizer's vocabulary (padding rows) have no text.
            return f"<unused:{token_id}>"
        if token_id in self.special_ids:
            return piece
        byte = _BYTE_PIECE.match(piece)
        if byte:
            return bytes([int(byte.group(1), 16)]).decode("utf-8", errors="replace")
        if self.byte_level and all(c in _UNICODE_TO_BYTE for c in piece):
            raw = bytes(_UNICODE_TO_BYTE[c] for c in piece)
            return raw.decode("utf-8", errors="replace")
        return piece.replace("\u2581", " ")

    @cached_property
    def _by_text(self) -> dict[str, int]:
        """Display text -> id over the whole vocabulary (lowest id wins on collisions)."""
        table: dict[str, int] = {}
        for n, token_id in enumerate(sorted(self.tokenizer.get_vocab().values())):
            if n % 8192 == 0:
                check_interrupt()  # a 262k vocabulary takes a while; nothing is cached if stopped
            table.setdefault(self(token_id), token_id)
        return table

    def resolve(self, query: str) -> ResolvedToken:
        """An exact vocabulary entry first, else the string's tokenization (first token tracked)."""
        if query == "":
            raise TokenResolutionError("cannot track an empty token string")
        vocab = self.tokenizer.get_vocab()
        if query in vocab:
            return ResolvedToken(query, vocab[query], [self(vocab[query])])
        if query in self._by_text:
            token_id = self._by_text[query]
            return ResolvedToken(query, token_id, [self(token_id)])
        ids = self.tokenizer.encode(query, add_special_tokens=False)
        if not ids:
            raise TokenResolutionError(f"token {query!r} yields no token in this vocabulary")
        return ResolvedToken(query, ids[0], self.many(ids), tuple(ids))


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))
