"""The lens at one generated token: the grid's cell statistics at the step's position, and the
token it emits.

The statistics are the grid's own (``lens.grid.lens_grid``: the head projection in MLX, the
statistics in numpy), so a step and ``analyze --positions all`` over the whole sequence are the
same computation on the same states. (MLX's float32 sum over a 49,152-token vocabulary is off
by up to ~2e-5 in a probability, numpy's pairwise sum by ~1e-7: on SmolLM2-135M, MLX-side
statistics put the steps 1.4e-4 from transformers' probabilities, these 4e-6.) The emitted
token is followed as one more tracked token, so its probability and rank at every captured
block come from the same pass. Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from lazarus_mcp.generation.sampling import Sampler
from lazarus_mcp.lens.compute import LensArrays
from lazarus_mcp.lens.fidelity import fidelity_arrays, fidelity_of
from lazarus_mcp.lens.grid import lens_grid
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


def _without_last_tracked(lens: LensArrays) -> LensArrays:
    lens.tracked_probs = lens.tracked_probs[:, :-1]
    lens.tracked_ranks = lens.tracked_ranks[:, :-1]
    lens.final_tracked_probs = lens.final_tracked_probs[:-1]
    lens.final_tracked_ranks = lens.final_tracked_ranks[:-1]
    return lens


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
    token = sampler.choose(final_logits)
    fidelity = fidelity_arrays(head(captured[last][None])[0], final_logits)
    mx.eval(token, *fidelity)  # the forward, the sampled token and the head's self-check
    token_id = int(token.item())
    [lens] = lens_grid(
        head,
        list(layers),
        {i: captured[i][None] for i in layers if i != last},
        final_logits[None],
        last,
        top_k,
        [*tracked_ids, token_id],
        [fidelity_of(fidelity)],
    )
    emitted_probs = lens.tracked_probs[:, -1].copy()
    emitted_ranks = lens.tracked_ranks[:, -1].copy()
    probability = float(lens.final_tracked_probs[-1])
    rank = int(lens.final_tracked_ranks[-1])
    return StepArrays(
        lens=_without_last_tracked(lens),
        token_id=token_id,
        probability=probability,
        rank=rank,
        emitted_probs=emitted_probs,
        emitted_ranks=emitted_ranks,
    )
