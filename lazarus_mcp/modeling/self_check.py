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


def max_prob_difference(model: nn.Module, head: LensHead, ids: list[int]) -> float:
    """max |softmax(lens of block N-1) - softmax(model's own logits)| at the last position."""
    last = len(blocks(model)) - 1
    captured, final = forward_with_taps(model, ids, [last])
    lens = mx.softmax(head(captured[last][None])[0].astype(mx.float32))
    own = mx.softmax(final.astype(mx.float32))
    return float(mx.max(mx.abs(lens - own)))


def self_checked_head(model_type: str, model: nn.Module, ids: list[int]) -> LensHead:
    """The model's own head, proven on the probe, or a refusal that says what did not match."""
    check_structure(model_type, model)
    head = own_head(model)
    try:
        diff = max_prob_difference(model, head, ids)
    except Exception as exc:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': its head could not be run on the "
            f"residual stream ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from exc
    if not diff <= TOLERANCE:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': self-check failed, the lens of the last "
            f"block differs from the model's own output (max |Δp| = {diff:.2g} > {TOLERANCE:g}), "
            "so its head does not read the residual stream after the last block"
        )
    return head
