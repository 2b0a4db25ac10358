"""Prompts through the model together: one padded forward pass, one cell function.

Every (prompt, position) cell of a batch is one cell of a single ``prompt_lens.lens_pass``, so
32 short prompts cost one forward and one head projection instead of 32 of each; one prompt at
its last position is the same code with one cell. Prompts are
grouped by length (``plan_groups``) so a long prompt does not pad a group of short ones; the
results come back in input order. Runs on the MLX worker thread (``plan_groups`` is plain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lazarus_mcp.analyses.analysis import LensPlan, build_result, plan_lens
from lazarus_mcp.analyses.prompt_lens import (
    PassFn,
    lens_of_prompts,
    lens_with_continuations,
    local_pass,
)
from lazarus_mcp.analyses.prompts import encode_prompt
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens.positions import select_positions
from lazarus_mcp.lens.readout import lens_name
from lazarus_mcp.lens.tokens import EncodedPrompt
from lazarus_mcp.schema import AnalysisConfig, AnalysisResult

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
            encoded.append(encode_prompt(loaded.tokenizer, prompt, config.use_chat_template))
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

    Multi-token tracked strings are scored as continuations: one forward per prompt, its rows
    the prompt followed by each string's pieces. A model split over processes carries its
    ``pipeline``, whose pass runs the same lens rank by rank (``lazarus_mcp/distributed``)."""
    pipeline = getattr(loaded, "pipeline", None)
    run: PassFn = (
        local_pass(loaded.model) if pipeline is None else pipeline.passer(loaded, lens_name(config))
    )
    with loaded.scope():
        if plan.multi_token:
            pieces = [list(t.piece_ids) for t in plan.tracked if t.multi_token]
            lenses = [
                lens_with_continuations(run, plan.request, e.token_ids, pieces) for e in encoded
            ]
        else:
            # Each prompt's requested positions plus its last (the top-level fields read it).
            wanted = [
                sorted(
                    {*select_positions(config.positions, len(e.token_ids)), len(e.token_ids) - 1}
                )
                for e in encoded
            ]
            lenses = lens_of_prompts(run, plan.request, [e.token_ids for e in encoded], wanted)
    return [
        build_result(loaded, prompt, enc, config, plan, lens)
        for prompt, enc, lens in zip(prompts, encoded, lenses, strict=True)
    ]


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
