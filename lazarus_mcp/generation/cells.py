"""The lens at one generated token: every statistic of the step, and the token it emits, from
one ``mx.eval``.

The token is chosen inside the same graph as the lens (``sampling``), so the emitted token's
probability and rank at every captured block cost no second evaluation. Block N-1's row is the
model's own output, as in ``compute``; the others are the head's projection of the captured
residual stream. Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from lazarus_mcp.generation.sampling import Sampler
from lazarus_mcp.lens import stats
from lazarus_mcp.lens.compute import LensArrays
from lazarus_mcp.lens.fidelity import fidelity_arrays, fidelity_of
from lazarus_mcp.lens.head import LensHead


@dataclass
class StepArrays:
    """The lens at the step's position plus what it says about the token it emitted."""

    lens: LensArrays
    token_id: int
    probability: float  # the model's own probability of the emitted token
    rank: int  # its rank in the model's output
    emitted_probs: np.ndarray  # [L]: its probability at each captured block
    emitted_ranks: np.ndarray  # [L]: its rank there


def step_lens(
    head: LensHead,
    captured: dict[int, mx.array],
    final_logits: mx.array,
    layers: list[int],
    last: int,
    top_k: int,
    tracked_ids: list[int],
    sampler: Sampler,
) -> StepArrays:
    """``captured``: block -> residual [D] at the step's position (``last`` always there);
    ``final_logits`` [V]: the model's own output there."""
    final_lp, final_p = stats.softmax_pair(final_logits)
    token = sampler.choose(final_logits)
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
    emitted = token.reshape(1)
    tracked = mx.array(tracked_ids or [0], dtype=mx.int32)
    outputs = [
        top_ids,
        mx.take_along_axis(probs, top_ids, axis=-1),
        stats.entropy(logprobs, probs),
        stats.kl_divergence(final_lp[None], final_p[None], logprobs),
        final_ids[0],
        final_p[final_ids[0]],
        probs[:, tracked],
        stats.ranks(logprobs, tracked),
        final_p[tracked],
        stats.ranks(final_lp[None], tracked)[0],
        stats.ranks(logprobs, final_ids[0][:1])[:, 0],
        *fidelity_arrays(head(captured[last][None])[0], final_logits),
        token,
        final_p[emitted][0],
        stats.ranks(final_lp[None], emitted)[0, 0],
        probs[:, emitted][:, 0],
        stats.ranks(logprobs, emitted)[:, 0],
    ]
    mx.eval(*outputs)
    arrays = [np.array(a) for a in outputs]
    if not tracked_ids:
        for n in (6, 7):
            arrays[n] = arrays[n][:, :0]
        for n in (8, 9):
            arrays[n] = arrays[n][:0]
    lens = LensArrays(list(layers), *arrays[:11], fidelity_of(outputs[11:14]))  # type: ignore[arg-type]
    return StepArrays(
        lens=lens,
        token_id=int(arrays[14]),
        probability=float(arrays[15]),
        rank=int(arrays[16]),
        emitted_probs=arrays[17],
        emitted_ranks=arrays[18],
    )
