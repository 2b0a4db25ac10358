"""Direct logit attribution: the final residual stream split into what entered block 0 and what
each block's attention and MLP sub-layers added, each component's share of every logit.

The final residual stream is the sum of the (scaled) embedding and each sub-layer's addition
(``subtaps``). Through the final norm, with its scale ``s`` fixed by that whole stream, each
component's share of token t's logit is ``(centre(x) / s) . (g * W_U[t])``; the norm's bias,
where it has one, is its own component. The unembedding is the model's own module applied to
the components (linear, so quantized or packed heads need no dequantized copy). The components
sum to the model's own pre-soft-cap logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import mlx.core as mx

from lazarus_mcp.lens.final_norm import probe_norm
from lazarus_mcp.lens.head import LensHead

Kind = Literal["embedding", "attention", "mlp", "bias"]


@dataclass
class Decomposition:
    kinds: list[tuple[Kind, int | None]]
    vectors: mx.array  # [C, D] float32: the components, summing to the final residual stream
    final: mx.array  # [D]: the final residual stream


def decompose(
    entered: list[mx.array],
    mid: list[mx.array],
    left: list[mx.array],
    first: int = 0,
    final: mx.array | None = None,
) -> Decomposition:
    """Components at one position from per-block states [D] each.

    A pipeline stage (``distributed/``) decomposes only its blocks ``first`` .. : the
    embedding is a component of the stage holding block 0, and ``final`` (the last stage's
    output, which the norm's scale needs) is given, not its own last state."""
    kinds: list[tuple[Kind, int | None]] = [("embedding", None)] if first == 0 else []
    vectors = [entered[0]] if first == 0 else []
    for i in range(len(left)):
        kinds += [("attention", first + i), ("mlp", first + i)]
        vectors += [mid[i] - entered[i], left[i] - mid[i]]
    stacked = mx.stack([v.astype(mx.float32) for v in vectors])
    whole = left[-1] if final is None else final
    return Decomposition(kinds, stacked, whole.astype(mx.float32))


def component_logits(
    head: LensHead, parts: Decomposition, dtype: mx.Dtype, with_bias: bool = True
) -> mx.array:
    """[C, V] direct logit contributions (plus a bias row where the norm or head has one, unless
    ``with_bias`` is False: a pipeline stage that does not run the last block)."""
    affine = probe_norm(head.norm, parts.final.shape[-1], dtype)
    s = affine.scale(parts.final)
    scaled = affine.centre(parts.vectors) / s * affine.weight
    zero = mx.zeros((1, scaled.shape[-1]), dtype=mx.float32)
    offset = head.unembed(zero).astype(mx.float32)
    rows = head.unembed(scaled).astype(mx.float32) - offset
    bias_row = None
    if affine.bias is not None:
        bias_row = head.unembed(affine.bias[None]).astype(mx.float32)
    elif bool(mx.any(offset != 0)):
        bias_row = offset
    if bias_row is not None and with_bias:
        rows = mx.concatenate([rows, bias_row])
        parts.kinds.append(("bias", None))
    if head.logit_factor is not None:
        rows = rows * head.logit_factor
    return rows


def own_precap(head: LensHead, final: mx.array) -> mx.array:
    logits = head.unembed(head.norm(final[None])).astype(mx.float32)[0]
    return logits * head.logit_factor if head.logit_factor is not None else logits
