"""The logit lens: one forward pass of the model's own code, taps on the selected blocks, and one
batched projection of the captured residual streams through the lens head.

Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.base import create_causal_mask

from lazarus_mcp import stats
from lazarus_mcp.head import LensHead, backbone


class _Block:
    """Stands in for one block: may hand it another attention mask, may keep its output.

    The captured output is the residual stream at the analyzed position. On the last block the
    wrapper also hands on only that position, so the model's own final norm, unembedding and
    soft-cap run on one vector instead of the whole sequence.
    """

    def __init__(
        self,
        block: nn.Module,
        position: int | None = None,
        truncate: bool = False,
        mask: mx.array | None = None,
    ) -> None:
        self._block = block
        self._position = position
        self._truncate = truncate
        self._mask = mask
        self.captured: mx.array | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._mask is not None:
            if "mask" in kwargs or len(args) < 2:
                kwargs["mask"] = self._mask
            else:
                args = (args[0], self._mask, *args[2:])
        out = self._block(*args, **kwargs)
        if self._position is None:
            return out
        hidden = out[0] if isinstance(out, tuple) else out
        p = self._position
        self.captured = hidden[0, p]
        if not self._truncate:
            return out
        sliced = hidden[:, p : p + 1]
        return (sliced, *out[1:]) if isinstance(out, tuple) else sliced

    def __getattr__(self, name: str) -> Any:
        # The model's loop may read block attributes (e.g. ``use_sliding``).
        return getattr(self._block, name)


def attention_masks(length: int, windows: dict[int, int], num_blocks: int) -> dict[int, mx.array]:
    """Masks for every block when some sliding window is shorter than the prompt, else none.

    Sliding blocks see the causal mask limited to their window, the others the plain causal
    mask, whatever the port would have chosen (see ``hf_config.sliding_windows``).
    """
    if not windows or length <= min(windows.values()):
        return {}
    causal = create_causal_mask(length)
    return {
        i: create_causal_mask(length, window_size=windows[i]) if i in windows else causal
        for i in range(num_blocks)
    }


class _ScaledEmbedding:
    """Multiplies the embedding lookup by a factor; everything else (``as_linear``) is untouched."""

    def __init__(self, embedding: nn.Module, factor: float) -> None:
        self._embedding = embedding
        self._factor = factor

    def __call__(self, ids: mx.array) -> mx.array:
        out = self._embedding(ids)
        return out * mx.array(self._factor, dtype=out.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedding, name)


class _StopForward(Exception):
    def __init__(self, value: mx.array) -> None:
        self.value = value


class _FirstBlockInput:
    def __init__(self, block: nn.Module) -> None:
        self._block = block

    def __call__(self, hidden: mx.array, *args: Any, **kwargs: Any) -> Any:
        raise _StopForward(hidden)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)


@contextmanager
def _swapped(container: Any, key: Any, replacement: Any) -> Iterator[None]:
    original = container[key]
    container[key] = replacement
    try:
        yield
    finally:
        container[key] = original


def applied_embedding_scale(model: nn.Module, num_tokens: int = 16) -> float:
    """The factor the model's own forward applies between the embedding lookup and block 0.

    Measured, not assumed: the forward is stopped at the input of block 0 (one lookup of cost).
    """
    inner = backbone(model)
    ids = mx.arange(num_tokens)[None]
    try:
        with _swapped(inner.layers, 0, _FirstBlockInput(inner.layers[0])):
            model(ids)
    except _StopForward as stop:
        embedded = inner.embed_tokens(ids).astype(mx.float32)
        fed = stop.value.astype(mx.float32)
        mask = mx.abs(embedded) > 1e-6
        ratio = mx.where(mask, fed / mx.where(mask, embedded, 1.0), 0.0)
        count = mx.maximum(mx.sum(mask), 1)
        return float(mx.sum(ratio) / count)
    raise RuntimeError("the model's forward never reached block 0")


@dataclass
class LensArrays:
    """Everything the result needs, as numpy arrays, computed by one ``mx.eval``."""

    layers: list[int]
    top_ids: np.ndarray  # [L, k]
    top_probs: np.ndarray  # [L, k]
    entropy: np.ndarray  # [L]
    kl: np.ndarray  # [L]
    final_top_ids: np.ndarray  # [k]
    final_top_probs: np.ndarray  # [k]
    tracked_probs: np.ndarray  # [L, T]
    tracked_ranks: np.ndarray  # [L, T]
    final_tracked_probs: np.ndarray  # [T]
    final_tracked_ranks: np.ndarray  # [T]


def forward_with_taps(
    model: nn.Module,
    token_ids: list[int],
    layers: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> tuple[dict[int, mx.array], mx.array]:
    """One forward pass; returns {block: hidden [D]} at the last position and the final logits [V].

    The final logits are the model's own (its norm, head and soft-cap), at that position.
    """
    inner = backbone(model)
    blocks = inner.layers
    last = len(blocks) - 1
    position = len(token_ids) - 1
    masks = attention_masks(len(token_ids), windows or {}, len(blocks))
    wrapped = {
        i: _Block(
            blocks[i],
            position=position if i in layers or i == last else None,
            truncate=i == last,
            mask=masks.get(i),
        )
        for i in {*layers, last, *masks}
    }
    with ExitStack() as stack:
        for i, block in wrapped.items():
            stack.enter_context(_swapped(blocks, i, block))
        if embedding_factor != 1.0:
            scaled = _ScaledEmbedding(inner["embed_tokens"], embedding_factor)
            stack.enter_context(_swapped(inner, "embed_tokens", scaled))
        logits = model(mx.array([token_ids]))
    captured = {i: wrapped[i].captured for i in layers}
    return captured, logits[0, -1]


def compute_lens(
    model: nn.Module,
    head: LensHead,
    token_ids: list[int],
    layers: list[int],
    top_k: int,
    tracked_ids: list[int],
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> LensArrays:
    """The lens of each selected block: one projection per block, all statistics from it."""
    captured, final_logits = forward_with_taps(model, token_ids, layers, embedding_factor, windows)
    last = len(backbone(model).layers) - 1
    final_lp, final_p = stats.softmax_pair(final_logits)
    # Block N-1's lens *is* the model's output; projecting it again would only repeat that work.
    projected = [i for i in layers if i != last]
    rows: dict[int, tuple[mx.array, mx.array]] = {}
    if projected:
        lens_lp, lens_p = stats.softmax_pair(head(mx.stack([captured[i] for i in projected])))
        rows = {i: (lens_lp[n], lens_p[n]) for n, i in enumerate(projected)}
    if last in layers:
        rows[last] = (final_lp, final_p)
    logprobs = mx.stack([rows[i][0] for i in layers])
    probs = mx.stack([rows[i][1] for i in layers])
    top_ids, _ = stats.top_k(logprobs, top_k)
    final_ids, _ = stats.top_k(final_lp[None], top_k)
    tracked = mx.array(tracked_ids or [0], dtype=mx.int32)
    tracked_ranks = stats.ranks(logprobs, tracked)
    final_ranks = stats.ranks(final_lp[None], tracked)
    outputs = [
        top_ids,
        mx.take_along_axis(probs, top_ids, axis=-1),
        stats.entropy(logprobs, probs),
        stats.kl_divergence(final_lp[None], final_p[None], logprobs),
        final_ids[0],
        final_p[final_ids[0]],
        probs[:, tracked],
        tracked_ranks,
        final_p[tracked],
        final_ranks[0],
    ]
    mx.eval(*outputs)
    arrays = [np.array(a) for a in outputs]
    if not tracked_ids:
        for n in (6, 7):
            arrays[n] = arrays[n][:, :0]
        for n in (8, 9):
            arrays[n] = arrays[n][:0]
    return LensArrays(layers, *arrays)
