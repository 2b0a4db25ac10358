"""The attention masks the architecture prescribes where a port would choose another.

mlx-lm's ports pick a block's mask themselves; where a family's sliding window is shorter than
the keys, some ports mask every block causally or window every block alike. The taps hand each
block its own mask instead (``taps._Block``), for a full sequence and for a step over the
model's KV cache (``step``), so the hidden states are those the family's own code computes
(transformers' sliding-window layers and full layers, as ``hf_config.sliding_windows`` reads
them). Runs on the MLX worker thread only.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache


def attention_masks(
    length: int, windows: dict[int, int], num_blocks: int, offset: int = 0
) -> dict[int, mx.array]:
    """Masks for every block when some sliding window is shorter than the keys, else none.

    Sliding blocks see the causal mask limited to their window, the others the plain causal
    mask, whatever the port would have chosen (see ``hf_config.sliding_windows``). ``length``
    new queries follow ``offset`` earlier keys (a step over a full KV cache, ``step``): the
    masks are [length, offset + length].
    """
    if not windows or offset + length <= min(windows.values()):
        return {}
    causal = create_causal_mask(length, offset)
    return {
        i: create_causal_mask(length, offset, window_size=windows[i]) if i in windows else causal
        for i in range(num_blocks)
    }


def step_masks(cache: list[Any], length: int, windows: dict[int, int]) -> dict[int, mx.array]:
    """The masks of one step over the model's cache, for the blocks whose keys it keeps whole.

    A block with a full ``KVCache`` holds every earlier key, so the family's window (or the
    plain causal mask the family prescribes where the port would window) is applied here, as
    for a full sequence; a ``RotatingKVCache`` already holds only its window and the model's own
    mask logic applies to it (``step.step_support`` refuses caches whose window disagrees)."""
    if not windows:
        return {}
    full = [i for i, c in enumerate(cache) if type(c) is KVCache]
    if not full:
        return {}
    # A pipeline stage's caches of other stages' blocks stay empty: the offset is its own.
    offset = max(cache[i].offset for i in full)
    masks = attention_masks(length, windows, len(cache), offset)
    return {i: masks[i] for i in full if i in masks}
