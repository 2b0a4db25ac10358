"""The lens at one generated token: the engine's cell statistics at the step's position, and the
token it emits.

The statistics are the engine's one cell function (``lens.cells.cell_stats``: the lens readout
in MLX, the statistics in the fused kernel or numpy), so a step and ``analyze --positions all``
over the whole sequence are the same computation on the same states. The fidelity check's lens
row of block N-1 is projected with the step's other rows (``CellSpec.fidelity``): one pass over
the head's weights per token instead of two (the head is SmolLM2's largest matrix, 113 MB in
float32). (MLX's float32 sum over a 49,152-token
vocabulary was off by up to ~2e-5 in a probability, numpy's pairwise sum by ~1e-7: on
SmolLM2-135M, MLX-side statistics put the steps 1.4e-4 from transformers' probabilities, these
4e-6.) The emitted token is followed as one more tracked token, so its probability and rank at
every captured block come from the same pass. Runs on the MLX worker thread only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from lazarus_mcp.analyses.prompt_lens import LensRequest
from lazarus_mcp.generation.sampling import Sampler
from lazarus_mcp.lens.cells import CellSpec, Column, Row, cell_stats
from lazarus_mcp.schema import Fidelity


@dataclass
class StepArrays:
    """The lens at the step's position plus what it says about the token it emitted."""

    column: Column
    fidelity: Fidelity
    token_id: int
    probability: float  # the model's own probability of the emitted token
    rank: int  # its rank in the model's output
    emitted_probs: np.ndarray  # [L]: its probability at each captured block
    emitted_ranks: np.ndarray  # [L]: its rank there


def step_lens(
    request: LensRequest,
    captured: dict[int, mx.array],
    final_logits: mx.array,
    sampler: Sampler,
) -> StepArrays:
    """``captured``: block -> residual [D] at the step's position (block N-1 always there);
    ``final_logits`` [V]: the model's own output there."""
    last = request.last
    token = sampler.choose(final_logits)
    mx.eval(token, final_logits, *captured.values())  # the forward and the sampled token
    token_id = int(np.array(token))
    tracked = [*request.tracked, token_id]
    spec = CellSpec(request.lens, request.rows, last, request.top_k, tracked, fidelity=True)
    hidden: dict[Row, mx.array] = {i: captured[i][None] for i in {*request.blocks, last}}
    cells = cell_stats(spec, hidden, final_logits[None])
    assert cells.fidelity is not None
    [fidelity] = cells.fidelity
    return with_emitted(cells.column(0), fidelity, token_id)


def with_emitted(column: Column, fidelity: Fidelity, token_id: int) -> StepArrays:
    """The step's arrays from its cell, whose last tracked token is the emitted one (also how
    rank 0 of a pipeline finishes a step from the ranks' rows, ``distributed/``)."""
    emitted_probs = column.tracked_probs[:, -1].copy()
    emitted_ranks = column.tracked_ranks[:, -1].copy()
    probability = float(column.final_tracked_probs[-1])
    rank = int(column.final_tracked_ranks[-1])
    column = replace(
        column,
        tracked_probs=column.tracked_probs[:, :-1],
        tracked_ranks=column.tracked_ranks[:, :-1],
        final_tracked_probs=column.final_tracked_probs[:-1],
        final_tracked_ranks=column.final_tracked_ranks[:-1],
    )
    return StepArrays(
        column=column,
        fidelity=fidelity,
        token_id=token_id,
        probability=probability,
        rank=rank,
        emitted_probs=emitted_probs,
        emitted_ranks=emitted_ranks,
    )
