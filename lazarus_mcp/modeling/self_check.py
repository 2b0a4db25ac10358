"""Serving an architecture outside the family registry, when the model's own code proves it.

For a model_type the registry does not know, the lens head is the model's own code after its
block list (``lens/own_head.py``). Before it is served, the load proves on a probe prompt that
the lens of block N-1 equals the model's own output logits (max |Δp| <= ``TOLERANCE``); if it
does not, the residual stream after the last block is not what the model's head reads, and the
architecture is refused saying so. Structures that are not residual-block transformers are
refused with the reason before any of this.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.errors import UnsupportedModelError
from lazarus_mcp.lens.head import LensHead, blocks
from lazarus_mcp.lens.own_head import own_head
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.modeling.families import NOT_RESIDUAL

TOLERANCE = 1e-4
PROBE = "The capital of France is Paris. One, two, three,"
_ATTENTION_NAMES = ("attn", "attention", "self_attn", "mixer_attn")


def refuse_known(model_type: str, config: dict[str, Any]) -> None:
    """Refuse before loading what is known not to be a decoder of residual blocks."""
    if model_type in NOT_RESIDUAL:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': {NOT_RESIDUAL[model_type]}, so it has no "
            "single residual stream of attention blocks for the logit lens to read"
        )
    if config.get("is_encoder_decoder") or config.get("is_decoder") is False:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': an encoder, not a causal decoder; the "
            "logit lens reads next-token predictions"
        )


def _has_attention(block: nn.Module) -> bool:
    from mlx.utils import tree_flatten

    names = [name for name, _ in tree_flatten(block.parameters())]
    return any(part in _ATTENTION_NAMES for name in names for part in name.split("."))


def check_structure(model_type: str, model: nn.Module) -> None:
    """A list of residual blocks, at least one with attention, or a refusal with the reason."""
    try:
        layers = blocks(model)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': mlx-lm's model has no list of residual "
            "blocks to read the stream between"
        ) from exc
    if not any(_has_attention(block) for block in layers):
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': none of its blocks has attention (a "
            "state-space or recurrent model), so it is not a residual-block transformer"
        )


def probe_ids(tokenizer: Any, vocab: int) -> list[int]:
    ids = list(tokenizer.encode(PROBE))
    return [i for i in ids if 0 <= i < vocab][:16] or list(range(min(8, vocab)))


def self_checked_head(model_type: str, model: nn.Module, ids: list[int]) -> LensHead:
    """The model's own head, proven on the probe, or a refusal that says what did not match."""
    check_structure(model_type, model)
    last = len(blocks(model)) - 1
    try:
        captured, final = forward_with_taps(model, ids, sorted({0, last}))
        # The model's own output from a plain forward (no taps, every position to the head).
        own = mx.softmax(model(mx.array([ids]))[0, -1].astype(mx.float32))
        tapped = float(mx.max(mx.abs(mx.softmax(final.astype(mx.float32)) - own)))
    except Exception as exc:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': mlx-lm's model did not run here "
            f"({type(exc).__name__}: {exc})".splitlines()[0]
        ) from exc
    head = own_head(model)
    try:
        # Two rows at once, as the lens projects them: each row's lens must not depend on the
        # others (a head that reads across positions would fail here).
        both = mx.softmax(head(mx.stack([captured[0], captured[last]])), axis=-1)
        alone = mx.softmax(head(captured[0][None]), axis=-1)[0]
        diff = float(mx.max(mx.abs(both[-1] - own)))
        rows = float(mx.max(mx.abs(both[0] - alone)))
    except Exception as exc:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': its head could not be run on the "
            f"residual stream ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from exc
    if not tapped <= TOLERANCE:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': self-check failed, its output at the "
            f"last position depends on other positions after its last block (max |Δp| = "
            f"{tapped:.2g})"
        )
    if not rows <= TOLERANCE:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': self-check failed, its head's output for "
            f"one residual vector depends on the others projected with it (max |Δp| = {rows:.2g})"
        )
    if not diff <= TOLERANCE:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': self-check failed, the lens of the last "
            f"block differs from the model's own output (max |Δp| = {diff:.2g} > {TOLERANCE:g}), "
            "so its head does not read the residual stream after the last block"
        )
    return head
