"""Several prompts through the model together: one padded forward pass, one batched projection.

Every (prompt, position) cell of a batch is one column of a single :func:`lens_grid` call, so
32 short prompts cost one forward and one head projection instead of 32 of each. Prompts are
grouped by length (``plan_groups``) so a long prompt does not pad a group of short ones; the
results come back in input order. Runs on the MLX worker thread (``plan_groups`` is plain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlx.core as mx

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.analysis import (
    LensPlan,
    analyze_single,
    build_result,
    plan_lens,
    single_position,
)
from lazarus_mcp.lens.fidelity import fidelity_arrays, fidelity_of
from lazarus_mcp.lens.grid import lens_grid
from lazarus_mcp.lens.grid_taps import forward_grid
from lazarus_mcp.lens.guards import check_encoded
from lazarus_mcp.lens.positions import select_positions
from lazarus_mcp.lens.tokens import EncodedPrompt, encode_prompt
from lazarus_mcp.runtime import limits
from lazarus_mcp.schema import AnalysisConfig, AnalysisResult
from lazarus_mcp.schema.fidelity import Fidelity

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel

# Padded tokens per forward pass and prompts per group: a group's activations stay small while
# a batch of short prompts still runs as one pass.
GROUP_TOKENS = 4096
GROUP_PROMPTS = 64


def plan_groups(
    lengths: list[int], max_tokens: int = GROUP_TOKENS, max_prompts: int = GROUP_PROMPTS
) -> list[list[int]]:
    """Indices of prompts to run together, shortest first; each group's padded size
    (count x longest) stays within ``max_tokens`` unless one prompt alone exceeds it."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if (
            group is not None
            and len(group) < max_prompts
            and (len(group) + 1) * lengths[i] <= max_tokens
        ):
            group.append(i)
        else:
            groups.append([i])
    return groups


def encode_all(
    loaded: LoadedModel, prompts: list[str], config: AnalysisConfig
) -> list[EncodedPrompt]:
    """Every prompt's tokens; a bad prompt of a batch is named by its index."""
    if not prompts:
        raise InvalidRequestError("no prompt given: give at least one text to analyze")
    encoded = []
    for n, prompt in enumerate(prompts):
        try:
            limits.check_prompt_chars(prompt)
            encoded.append(encode_prompt(loaded.tokenizer, prompt, config.use_chat_template))
            # Every block's lens at most (the plan's layers are not known here).
            check_encoded(loaded, len(encoded[-1].token_ids), loaded.info.num_layers)
        except InvalidRequestError as exc:
            if len(prompts) == 1:
                raise
            raise InvalidRequestError(f"prompt {n + 1} of {len(prompts)}: {exc}") from exc
        if config.positions != "last":
            select_positions(config.positions, len(encoded[-1].token_ids))  # checks the range
    return encoded


def prepare(
    loaded: LoadedModel, prompts: list[str], config: AnalysisConfig
) -> tuple[LensPlan, list[EncodedPrompt]]:
    """Check the request once, then encode every prompt."""
    plan = plan_lens(loaded, config)
    return plan, encode_all(loaded, prompts, config)


def analyze_encoded(
    loaded: LoadedModel,
    prompts: list[str],
    encoded: list[EncodedPrompt],
    config: AnalysisConfig,
    plan: LensPlan,
) -> list[AnalysisResult]:
    """The results of prompts that run as one padded forward pass, in their order.

    One prompt at its last position (and any prompt whose multi-token tracked strings are
    scored as continuations) takes the single-position lens, which is what it always was.
    A model split over processes carries its ``pipeline``, which runs the same lens rank by
    rank (``lazarus_mcp/distributed``)."""
    pipeline = getattr(loaded, "pipeline", None)
    if pipeline is not None:
        return pipeline.analyze_encoded(loaded, prompts, encoded, config, plan)
    if single_position(config) and (len(prompts) == 1 or plan.multi_token):
        return [
            analyze_single(loaded, prompt, enc, config, plan)
            for prompt, enc in zip(prompts, encoded, strict=True)
        ]
    last = loaded.info.num_layers - 1
    # Each prompt's requested positions plus its last (the top-level fields always read it).
    wanted = [
        sorted({*select_positions(config.positions, len(e.token_ids)), len(e.token_ids) - 1})
        for e in encoded
    ]
    with loaded.scope():
        capture = forward_grid(
            loaded.model,
            [e.token_ids for e in encoded],
            wanted,
            sorted({*plan.layers, last}),  # block N-1 for the fidelity check
            config.include_embeddings,
            plan.factor,
            loaded.sliding_windows,
        )
        # The batch's cells side by side: prompt b's positions at b * width + j.
        width = max(len(w) for w in wanted)
        cells = mx.array([b * width + j for b, w in enumerate(wanted) for j in range(len(w))])
        hidden = {r: h.reshape(-1, h.shape[-1])[cells] for r, h in capture.hidden.items()}
        final = capture.final_logits
        fidelities = _fidelities(loaded, capture.hidden[last], final, wanted)
        lenses = lens_grid(
            loaded.head,
            plan.rows,
            hidden,
            final.reshape(-1, final.shape[-1]),
            last,
            config.top_k,
            [t.token_id for t in plan.tracked],
            [f for f, w in zip(fidelities, wanted, strict=True) for _ in w],
            final_rows=cells,
        )
    results = []
    start = 0
    for prompt, enc, positions in zip(prompts, encoded, wanted, strict=True):
        mine = dict(zip(positions, lenses[start : start + len(positions)], strict=True))
        start += len(positions)
        results.append(build_result(loaded, prompt, enc, config, plan, mine))
    return results


def _fidelities(
    loaded: LoadedModel, last_hidden: mx.array, final: mx.array, wanted: list[list[int]]
) -> list[Fidelity]:
    """Per prompt: the lens head on block N-1 against the model's own output, at its last
    position (the last of its wanted positions), as the single-position lens measures it."""
    at = [len(w) - 1 for w in wanted]
    arrays = [
        fidelity_arrays(loaded.head(last_hidden[b, j][None])[0], final[b, j])
        for b, j in enumerate(at)
    ]
    mx.eval(*(a for trio in arrays for a in trio))
    return [fidelity_of(trio) for trio in arrays]


def analyze_many(
    loaded: LoadedModel, prompts: list[str], config: AnalysisConfig
) -> list[AnalysisResult]:
    """All prompts, grouped by length, each group one forward pass; results in input order."""
    plan, encoded = prepare(loaded, prompts, config)
    results: list[AnalysisResult | None] = [None] * len(prompts)
    for group in plan_groups([len(e.token_ids) for e in encoded]):
        done = analyze_encoded(
            loaded, [prompts[i] for i in group], [encoded[i] for i in group], config, plan
        )
        for i, result in zip(group, done, strict=True):
            results[i] = result
    return [r for r in results if r is not None]
