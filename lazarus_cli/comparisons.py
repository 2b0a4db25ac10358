"""``lazarus introspect attribute`` and ``lazarus introspect compare``: options -> core -> render.

Registered on ``main.introspect``; the layer options are ``analyze``'s, defaulting to every block
(both commands are about depth).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from lazarus_cli.main import (
    Device,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    ModelOpt,
    Strategy,
    VerboseOpt,
    build_config,
    introspect,
    setup_logging,
)
from lazarus_cli.outcome import check_writable, emit, fail, run_core

if TYPE_CHECKING:
    from lazarus_mcp.introspection import ModelAnalyzer
    from lazarus_mcp.schema import AnalysisConfig
    from lazarus_mcp.schema.compare import CompareResult

R = TypeVar("R")

PromptOpt = Annotated[str, typer.Option("-p", "--prompt", help="The text to analyze.")]
AllOpt = Annotated[bool, typer.Option("--all-layers", help="Every block (the default).")]
StepOpt = Annotated[int, typer.Option("-s", "--layer-step", help="Spacing for evenly_spaced.")]
StrategyOpt = Annotated[
    Strategy | None, typer.Option("--layer-strategy", help="Which blocks (default all).")
]
LayersOpt = Annotated[
    str | None,
    typer.Option("--layers", "--custom-layers", help="Blocks for custom, e.g. 0,4,-1 (-1 = last)."),
]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Top tokens per layer.")]
RawOpt = Annotated[bool, typer.Option("--raw", help="Do not apply the chat template.")]
OutputOpt = Annotated[
    Path | None, typer.Option("-o", "--output", help="Write the result as JSON to this file.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON result instead of text.")]
LensOpt = Annotated[str, typer.Option("--lens", help="logit, or a tuned/Jacobian lens directory.")]


def _depth_config(
    strategy: Strategy | None,
    all_layers: bool,
    layer_step: int,
    layers: str | None,
    tokens: list[str],
    top_k: int,
    raw: bool,
) -> AnalysisConfig:
    # Both commands are about depth: every block unless a layer option says otherwise.
    return build_config(
        strategy, all_layers, layer_step, layers, tokens, top_k, None, raw, every_by_default=True
    )


def _run_on_model(
    model: str,
    dtype: Dtype,
    device: Device | None,
    output: Path | None,
    call: Callable[[ModelAnalyzer], Awaitable[R]],
) -> R:
    """Open the model, make the call, close it: the command's one core call."""
    if output is not None:
        check_writable(output)
    from lazarus_mcp.introspection import ModelAnalyzer

    async def work() -> R:
        where = device.value if device else None
        async with ModelAnalyzer.from_pretrained(model, dtype=dtype.value, device=where) as a:
            return await call(a)

    return run_core(work)


@introspect.command("attribute")
def attribute(
    model: ModelOpt,
    prompt: PromptOpt,
    target: Annotated[
        list[str] | None,
        typer.Option("-t", "--target", help="Token to attribute (repeatable; default: top-1)."),
    ] = None,
    foil: Annotated[
        str | None, typer.Option("--foil", help="Contrast token: target minus foil per component.")
    ] = None,
    all_layers: AllOpt = False,
    layer_step: StepOpt = 4,
    layer_strategy: StrategyOpt = None,
    layers: LayersOpt = None,
    top_k: TopKOpt = 5,
    raw: RawOpt = False,
    lens: LensOpt = "logit",
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Which block and sub-layer (attention or MLP) wrote a token's logit.

    Also the lens after each block's attention sub-layer, beside the lens after the whole block.
    """
    setup_logging(verbose)
    base = _depth_config(layer_strategy, all_layers, layer_step, layers, target or [], top_k, raw)
    from lazarus_cli import render
    from lazarus_mcp.schema import AttributionConfig

    config = AttributionConfig(**{**base.model_dump(), "lens": lens}, foil=foil)
    result = _run_on_model(model, dtype, device, output, lambda a: a.attribute(prompt, config))
    emit(result, render.attribution(result), output, json_out)


@introspect.command("compare")
def compare(
    model: ModelOpt,
    prompt: PromptOpt,
    prompt_b: Annotated[
        str | None, typer.Option("--prompt-b", help="Run B: this prompt on the same model.")
    ] = None,
    model_b: Annotated[
        str | None,
        typer.Option("--model-b", help="Run B: the same prompt on this model (same vocabulary)."),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option("-t", "--track", help="Token to show on both sides (repeatable)."),
    ] = None,
    all_layers: AllOpt = False,
    layer_step: StepOpt = 4,
    layer_strategy: StrategyOpt = None,
    layers: LayersOpt = None,
    top_k: TopKOpt = 5,
    raw: RawOpt = False,
    lens: LensOpt = "logit",
    lens_b: Annotated[
        str | None,
        typer.Option("--lens-b", help="Run B: the same prompt and model through this lens."),
    ] = None,
    output: OutputOpt = None,
    json_out: JsonOpt = False,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Two runs' lenses side by side: two prompts, one prompt on two models, or two lenses."""
    setup_logging(verbose)
    if sum(x is not None for x in (prompt_b, model_b, lens_b)) != 1:
        fail("give exactly one of --prompt-b (same model), --model-b (same prompt), --lens-b")
    config = _depth_config(layer_strategy, all_layers, layer_step, layers, track or [], top_k, raw)
    config = config.model_copy(update={"lens": lens})
    from lazarus_cli import render
    from lazarus_mcp.introspection import ModelAnalyzer

    async def call(a: ModelAnalyzer) -> CompareResult:
        other = None
        if model_b is not None:
            where = device.value if device else None
            other = await ModelAnalyzer.from_pretrained(model_b, dtype=dtype.value, device=where)
        return await a.compare(prompt, config, prompt_b=prompt_b, other=other, lens_b=lens_b)

    result = _run_on_model(model, dtype, device, output, call)
    emit(result, render.compare(result), output, json_out)
