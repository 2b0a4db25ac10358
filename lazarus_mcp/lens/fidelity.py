"""Fidelity: the lens head applied to the last block's residual stream against the model's own
output, measured on every call.

The lens is only the model's if projecting its last block through the head reproduces the logits
the model itself returns; a port that adds a step between the last block and the head (or a head
assembled from the wrong modules) shows up here as a nonzero difference, not as silently wrong
layers. On the parity checkpoints in float32 the difference is 0 to about 1e-7.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from lazarus_mcp.lens import stats
from lazarus_mcp.schema.fidelity import Fidelity


def fidelity_arrays(lens_logits: mx.array, own_logits: mx.array) -> list[mx.array]:
    """Unevaluated [max |dp|, KL(own || lens), top-1 agreement] for logits [V] each."""
    lens_lp, lens_p = stats.softmax_pair(lens_logits[None])
    own_lp, own_p = stats.softmax_pair(own_logits[None])
    return [
        mx.max(mx.abs(lens_p - own_p)),
        stats.kl_divergence(own_lp, own_p, lens_lp)[0],
        mx.argmax(lens_lp[0]) == mx.argmax(own_lp[0]),
    ]


def fidelity_of(evaluated: list[mx.array]) -> Fidelity:
    max_dp, kl, agree = (np.array(a) for a in evaluated)
    return Fidelity(
        max_abs_prob_diff=float(max_dp), kl_divergence=max(0.0, float(kl)), top1_agrees=bool(agree)
    )
