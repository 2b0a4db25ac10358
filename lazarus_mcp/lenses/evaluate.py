"""Held-out fit of a lens: mean KL(model output || lens) per block, logit lens beside it.

The number a lens is judged by (Belrose et al. 2023, fig. 2): on text it was not fitted on, how
far each block's readout is from the model's own output distribution, in nats, averaged over
every position. Block N-1 is 0 for every lens by construction and is not listed.
Runs on the MLX worker thread only.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.lenses.lens_dir import HeldOut
from lazarus_mcp.lenses.readout import LoadedLens
from lazarus_mcp.lenses.tuned_train import capture, kl_rows
from lazarus_mcp.runtime.limits import check_interrupt


def held_out(
    model: nn.Module,
    head: LensHead,
    lens: LoadedLens,
    sequences: Sequence[Sequence[int]],
    num_layers: int,
    embedding_factor: float = 1.0,
    windows: dict[int, int] | None = None,
) -> HeldOut:
    """Per block 0..N-2: mean KL of the logit lens and of ``lens`` over ``sequences``."""
    blocks = num_layers - 1
    logit, learned = np.zeros(blocks), np.zeros(blocks)
    tokens = 0
    for sequence in sequences:
        streams = capture(model, [sequence], num_layers, embedding_factor, windows)
        for block in range(blocks):
            h = streams.hidden[block + 1]
            a = mx.sum(kl_rows(streams.target_logp, head(h)))
            b = mx.sum(kl_rows(streams.target_logp, head(lens.transform(h, block))))
            mx.eval(a, b)
            logit[block] += float(a)
            learned[block] += float(b)
        tokens += streams.target_logp.shape[0]
        check_interrupt()
    scale = 1.0 / max(tokens, 1)
    return HeldOut(
        tokens=tokens,
        layers=list(range(blocks)),
        logit_kl=[round(float(v) * scale, 5) for v in logit],
        lens_kl=[round(float(v) * scale, 5) for v in learned],
    )
