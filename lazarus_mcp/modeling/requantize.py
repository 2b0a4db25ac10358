"""``--requantize 4|8``: a dequantized GGUF model (K-quants) made MLX-affine, and what that costs
the lens, measured at load.

A Q4_K_M file dequantized to float32 holds ~7x the file's bytes; MLX computes only its own
affine quantization, so requantizing its float layers (groups of 32, as GGUF's Q4_0/Q8_0 blocks)
brings it back near the file's size. It is not free: every block's lens on a probe prompt is
computed before and after, and the largest |Δp| over all blocks, with how often the top-1
agrees, goes into ``ModelInfo.requantization``. Runs on the MLX worker thread.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lazarus_mcp.lens.head import LensHead, blocks
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.schema import RequantizationInfo

GROUP = 32
BITS = (4, 8)


def _lens(model: Any, head: LensHead, ids: list[int], factor: float) -> mx.array:
    """Probabilities [blocks, vocab] of every block's lens at the probe's last position."""
    layers = list(range(len(blocks(model))))
    captured, _ = forward_with_taps(model, ids, layers, factor)
    rows = mx.stack([captured[i] for i in layers])
    return mx.softmax(head(rows).astype(mx.float32), axis=-1)


def _quantizable(path: str, module: nn.Module) -> bool:
    if type(module) not in (nn.Linear, nn.Embedding):
        return False
    return int(module.weight.shape[-1]) % GROUP == 0


def requantize(
    model: Any, make_head: Any, ids: list[int], bits: int, factor: float = 1.0
) -> tuple[LensHead, RequantizationInfo]:
    """Quantize the model's float layers in place; the new head and the measured cost."""
    before = _lens(model, make_head(), ids, factor)
    mx.eval(before)
    nn.quantize(model, group_size=GROUP, bits=bits, class_predicate=_quantizable)
    mx.eval(model.parameters())
    mx.clear_cache()
    head = make_head()
    after = _lens(model, head, ids, factor)
    diff = float(mx.max(mx.abs(after - before)))
    agree = mx.argmax(after, axis=-1) == mx.argmax(before, axis=-1)
    return head, RequantizationInfo(
        bits=bits,
        group_size=GROUP,
        probe_tokens=len(ids),
        max_abs_prob_diff=diff,
        top1_agreement=float(mx.mean(agree.astype(mx.float32))),
        final_top1_agrees=bool(agree[-1]),
    )
