"""Step mode: the tapped forward over the model's own KV cache, a prompt first, then token by token.

Scoring a sequence and generating from it are the same code: :meth:`Steps.feed` runs
:func:`taps.tapped_forward` on the next tokens with the model's cache
(``mlx_lm.models.cache.make_prompt_cache``), so every block's residual stream at the new
positions comes from the model's own forward, its own cached keys and its own masks. Feeding a
prompt at once and then one token at a time gives the states a single forward over the whole
sequence gives (``tests/test_step.py``: within 1e-5 in float32, sliding-window families past their
window included).

Sliding windows: a ``RotatingKVCache`` keeps only a block's window, and the model's own mask
logic applies to it; a plain ``KVCache`` keeps every key, and the family's window is applied
to it by the same masks a full sequence gets (``taps.step_masks``; mlx-lm's Gemma 2 port, for
one, caches and masks every key). A cache lazarus cannot mask as the family prescribes is
refused with the reason (:func:`step_support`). Rows of a batch step together, so they must all
have the same length (no padding: each row's next token sits at the same position).
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.lens.head import blocks as block_list
from lazarus_mcp.lens.taps import Stage, Tapped, tapped_forward


def step_support(model: nn.Module, cache: list[Any], windows: dict[int, int]) -> str | None:
    """Why the model's ``cache`` cannot be driven block by block as the family prescribes, or
    None when it can. ``windows``: {block: window} from the family registry."""
    blocks = block_list(model)
    if len(cache) != len(blocks):
        return (
            f"its cache has {len(cache)} entries for {len(blocks)} blocks, so a block's keys "
            "cannot be told apart"
        )
    for i, entry in enumerate(cache):
        window = windows.get(i)
        if type(entry) is KVCache:
            continue  # every key kept: the family's window is applied by the masks
        if type(entry) is RotatingKVCache:
            if window is None:
                return (
                    f"block {i} attends to every earlier token, but the port caches only its "
                    f"last {entry.max_size} keys"
                )
            if entry.max_size != window or entry.keep:
                return (
                    f"block {i} attends through a window of {window} tokens, but the port "
                    f"caches {entry.max_size} keys (keeping {entry.keep})"
                )
            continue
        if window is not None:
            return (
                f"block {i} attends through a window of {window} tokens, and its cache "
                f"({type(entry).__name__}) cannot be masked to it"
            )
        # Other caches (state-space, convolution, chunked attention) are the model's own
        # business: their blocks have no window lazarus would impose.
    return None


def check_steppable(model: nn.Module, cache: list[Any], windows: dict[int, int]) -> None:
    reason = step_support(model, cache, windows)
    if reason is not None:
        raise UnsupportedModelError(
            f"token-by-token steps are not supported for this model: {reason}"
        )


@dataclass
class Steps:
    """One sequence (or batch of equal-length rows) fed through the model with its KV cache.

    Make it with :func:`start_steps`; call :meth:`feed` with the prompt, then with each next
    token. ``offset`` counts the tokens fed so far (per row)."""

    model: nn.Module
    cache: list[Any]
    embedding_factor: float = 1.0
    windows: dict[int, int] = field(default_factory=dict)
    offset: int = 0

    def feed(
        self,
        ids: list[int] | list[list[int]] | mx.array,
        positions: Sequence[int] | None = None,
        outputs: Collection[int] = (),
        inputs: Collection[int] = (),
        mid: str | None = None,
        stage: Stage | None = None,
    ) -> Tapped:
        """Run the next tokens (one row [N], or rows [B, N]) and extend the cache.

        ``positions``: which of the new tokens to keep, counted from the first of them
        (negative from the last); default the last one. Returns the :class:`Tapped` of
        ``tapped_forward``: ``outputs[i]`` [B, P, D] for the blocks asked for, and the
        model's own ``logits`` [B, P, V] at those positions. With ``stage`` (a pipeline stage,
        ``distributed/``) only its blocks run, and only their caches grow."""
        tokens = ids if isinstance(ids, mx.array) else mx.array(ids)
        if tokens.ndim == 1:
            tokens = tokens[None]
        length = tokens.shape[1]
        if length == 0:
            raise InvalidRequestError("no token to feed: give at least one")
        kept = (
            [length - 1] if positions is None else [p + length if p < 0 else p for p in positions]
        )
        if not kept or not all(0 <= p < length for p in kept):
            raise InvalidRequestError(
                f"positions {list(positions or [])} out of range for {length} new tokens"
            )
        tapped = tapped_forward(
            self.model,
            tokens,
            mx.array(kept, dtype=mx.int32)[None, :, None],
            outputs=outputs,
            inputs=inputs,
            mid=mid,
            embedding_factor=self.embedding_factor,
            windows=self.windows,
            cache=self.cache,
            stage=stage,
        )
        self.offset += length
        return tapped


def start_steps(
    model: nn.Module, embedding_factor: float = 1.0, windows: dict[int, int] | None = None
) -> Steps:
    """A fresh KV cache of the model's own kind, checked (:func:`step_support`)."""
    cache = make_prompt_cache(model)
    check_steppable(model, cache, windows or {})
    return Steps(model, cache, embedding_factor, dict(windows or {}))
