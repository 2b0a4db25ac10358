"""Tokens as labels a person can read: whitespace made visible, control bytes escaped, long
tokens clipped. A leading space matters (' Paris' is not 'Paris'), so it is drawn as '␣'."""

from __future__ import annotations

_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def visible(token: str) -> str:
    """Spaces, newlines and tabs as symbols; other control characters as \\xNN; an incomplete
    UTF-8 byte (a byte-level token decoded alone) stays U+FFFD, the replacement character."""
    out = []
    for ch in token:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) or "\u2205"


def clip(text: str, width: int) -> str:
    """At most ``width`` characters, an ellipsis marking a cut."""
    return text if len(text) <= width else text[: max(1, width - 1)] + "\u2026"


def label(token: str, width: int) -> str:
    return clip(visible(token), width)
