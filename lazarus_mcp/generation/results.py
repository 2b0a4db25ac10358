"""The generation's contract from the step arrays: each step as ``analyze`` shapes a position,
the milestones over the whole generation, the worst fidelity."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from lazarus_mcp.analyses.analysis import _evolutions, _layer_predictions, _top
from lazarus_mcp.generation.cells import StepArrays
from lazarus_mcp.lens.milestones import _settled
from lazarus_mcp.lens.tokens import ResolvedToken, TokenText
from lazarus_mcp.schema import Fidelity, TokenAtLayer
from lazarus_mcp.schema.generation import (
    GenerationMilestones,
    GenerationStep,
    TrackedMilestone,
)


def generation_step(
    text: TokenText, tracked: list[ResolvedToken], step: int, position: int, arrays: StepArrays
) -> GenerationStep:
    lens = arrays.column
    layers = [layer for layer in lens.rows if layer is not None]
    ranks = arrays.emitted_ranks.tolist()
    return GenerationStep(
        step=step,
        position=position,
        token_id=arrays.token_id,
        token=text(arrays.token_id),
        probability=arrays.probability,
        rank=arrays.rank,
        final_prediction=_top(text, lens.final_top_ids.tolist(), lens.final_top_probs.tolist()),
        layer_predictions=_layer_predictions(text, lens),
        emitted=[
            TokenAtLayer(layer_idx=layer, probability=float(p), rank=int(r))
            for layer, p, r in zip(layers, arrays.emitted_probs.tolist(), ranks, strict=True)
        ],
        decided_layer=_settled(layers, [r == 1 for r in ranks]),
        token_evolutions=_evolutions(text, tracked, lens),
    )


def worst_fidelity(fidelities: Sequence[Fidelity]) -> Fidelity:
    return Fidelity(
        max_abs_prob_diff=max(f.max_abs_prob_diff for f in fidelities),
        kl_divergence=max(f.kl_divergence for f in fidelities),
        top1_agrees=all(f.top1_agrees for f in fidelities),
    )


def _tracked_milestone(
    column: int, token: ResolvedToken, steps: list[GenerationStep]
) -> TrackedMilestone:
    first_step = first_layer = good_step = good_layer = None
    for step in steps:
        evolution = step.token_evolutions[column]
        leading = [s.layer_idx for s in evolution.layers if s.rank == 1 and s.layer_idx is not None]
        if first_step is None and leading:
            first_step, first_layer = step.step, leading[0]
        if good_step is None and evolution.final_rank == 1:
            good_step = step.step
            good_layer = _settled(
                [s.layer_idx for s in evolution.layers if s.layer_idx is not None],
                [s.rank == 1 for s in evolution.layers if s.layer_idx is not None],
            )
    first = steps[0].token_evolutions[column] if steps else None
    return TrackedMilestone(
        query=token.query,
        token=first.token if first is not None else token.query,
        token_id=token.token_id,
        first_led_step=first_step,
        first_led_layer=first_layer,
        led_for_good_step=good_step,
        led_for_good_layer=good_layer,
        emitted_steps=[s.step for s in steps if s.token_id == token.token_id],
    )


def generation_milestones(
    tracked: list[ResolvedToken], steps: list[GenerationStep]
) -> GenerationMilestones:
    decided = [s.decided_layer for s in steps]
    known = [d for d in decided if d is not None]
    return GenerationMilestones(
        decided_layers=decided,
        median_decided_layer=float(statistics.median(known)) if known else None,
        undecided_steps=[s.step for s in steps if s.decided_layer is None],
        tracked=[_tracked_milestone(n, t, steps) for n, t in enumerate(tracked)],
    )
