"""Fidelity: the lens of the last block's residual stream against the model's own output,
measured on every call.

The lens is only the model's if reading its last block reproduces the logits the model itself
returns; a port that adds a step between the last block and the head (or a head assembled from
the wrong modules, or a translator lens that moves block N-1) shows up here as a nonzero
difference, not as silently wrong layers. On the parity checkpoints in float32 the logit lens
differs by 0 to about 1e-7.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from lazarus_mcp.lens import stats
from lazarus_mcp.lens.readout import Lens
from lazarus_mcp.schema.fidelity import Fidelity


def fidelity(lens_logits: np.ndarray, own_logits: np.ndarray) -> Fidelity:
    """Max |dp|, KL(own || lens) and top-1 agreement for logits [V] each."""
    lens_lp, lens_p = stats.softmax_pair(lens_logits)
    own_lp, own_p = stats.softmax_pair(own_logits)
    return Fidelity(
        max_abs_prob_diff=float(np.max(np.abs(lens_p - own_p))),
        kl_divergence=max(0.0, float(stats.kl_divergence(own_lp, own_p, lens_lp))),
        top1_agrees=bool(np.argmax(lens_lp) == np.argmax(own_lp)),
    )


def fidelities(lens: Lens, last: int, hidden: mx.array, own: mx.array) -> list[Fidelity]:
    """Per cell: the lens of block N-1 (``hidden`` [C, D]) against the model's own [C, V]."""
    lensed = lens.readout(hidden, last)
    own32 = own.astype(mx.float32)
    mx.eval(lensed, own32)
    pairs = zip(np.array(lensed), np.array(own32), strict=True)
    return [fidelity(a, b) for a, b in pairs]
