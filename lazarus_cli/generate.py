"""``lazarus introspect generate``: the model writes, and the lens is read at every token.

Registered on ``main.introspect``. The layer options are ``analyze``'s (evenly spaced by
default); the sampling options map onto :class:`GenerationConfig` as the MCP tool's arguments
do, so the same options give the same tokens and the same JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lazarus_cli.main import (
    Dtype,
    DtypeOpt,
    DeviceOpt,
    ModelOpt,
    PlotMetric,
    Strategy,
    VerboseOpt,
    build_config,
    introspect,
    raise_limits,
    setup_logging,
)
from lazarus_cli.outcome import check_writable, emit_text, fail, run_core, write_files

if TYPE_CHECKING:
    from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult, GenerationStep


def _config(
    strategy: Strategy | None,
    all_layers: bool,
    layer_step: int,
    layers: str | None,
    track: list[str],
    top_k: int,
    raw: bool,
    **sampling: object,
) -> GenerationConfig:
    from pydantic import ValidationError

    from lazarus_mcp.schema.generation import GenerationConfig

    lens = build_config(strategy, all_layers, layer_step, layers, track, top_k, None, raw)
    try:
        return GenerationConfig.model_validate(
            {**lens.model_dump(exclude={"positions", "include_embeddings"}), **sampling}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        fail(f"invalid {where}: {str(err['msg']).removeprefix('Value error, ')}")


@introspect.command("generate")
def generate(
    model: ModelOpt,
    prompt: Annotated[str, typer.Option("-p", "--prompt", help="The text to continue.")],
    max_new_tokens: Annotated[
        int, typer.Option("-n", "--max-new-tokens", help="Tokens to generate at most.")
    ] = 32,
    temperature: Annotated[
        float, typer.Option("--temperature", help="0: greedy (default); above 0: sampled.")
    ] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Sampler seed (the same seed, the same tokens).")
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option("--stop", help="End when the text contains this string (repeatable)."),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Do not apply the chat template.")] = False,
    lens: Annotated[
        str,
        typer.Option("--lens", help="The lens read at each token: logit (the model's own head)."),
    ] = "logit",
    all_layers: Annotated[
        bool, typer.Option("--all-layers", help="Every block (overrides the strategy).")
    ] = False,
    layer_step: Annotated[
        int, typer.Option("-s", "--layer-step", help="Spacing for evenly_spaced.")
    ] = 4,
    layer_strategy: Annotated[
        Strategy | None,
        typer.Option("--layer-strategy", help="Which blocks (default evenly_spaced)."),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers", "--custom-layers", help="Blocks for custom, e.g. 0,4,-1 (-1 = last)."
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Top tokens per layer.")] = 5,
    track: Annotated[
        list[str] | None,
        typer.Option("-t", "--track", help="Token to follow at every step (repeatable)."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the layers x generated tokens heatmap: .png or .svg."),
    ] = None,
    plot_metric: Annotated[
        PlotMetric,
        typer.Option(
            "--plot-metric",
            help="Cell colour: probability, entropy, kl, or rank (of the written token).",
        ),
    ] = PlotMetric.probability,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the result as JSON to this file.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the JSON result instead of text.")
    ] = False,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
    max_prompt_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Raise the limit on prompt plus generated tokens (default 4096)."),
    ] = None,
    call_timeout: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds the generation may run (default 300); past them "
                     "the tokens so far are the result."),
    ] = None,
) -> None:
    """Let the model write, and read the lens at every token it writes: when each was decided."""
    setup_logging(verbose)
    raise_limits(max_prompt_tokens=max_prompt_tokens, max_prompt_chars=None, call_timeout=call_timeout)
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.plots import plot_format

    if lens != "logit":
        fail(f"--lens {lens!r}: this command reads the logit lens (--lens logit)")
    if plot is not None:
        try:
            if plot_format(plot) == "html":
                fail("a generation's heatmap is drawn as .png or .svg")
        except LazarusError as exc:
            fail(str(exc))
    config = _config(
        layer_strategy,
        all_layers,
        layer_step,
        layers,
        track or [],
        top_k,
        raw,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stop or [],
    )
    for path in [p for p in (output, plot) if p is not None]:
        check_writable(path)
    from lazarus_cli.progress import TerminalProgress
    from lazarus_mcp.introspection import ModelAnalyzer

    bar = TerminalProgress()

    async def run() -> GenerationResult:
        opening = ModelAnalyzer.from_pretrained(
            model, dtype=dtype.value, device=device.value if device else None
        )
        analyzer = await bar.wait(f"loading {model}", opening)

        async def on_step(step: GenerationStep) -> None:
            await bar.update(step.step + 1, config.max_new_tokens, "tokens")

        return await analyzer.generate(prompt, config, on_step=on_step, plot=plot is not None)

    result = run_core(run, on_error=bar.clear)
    bar.clear()
    files: dict[Path, bytes] = {}
    if plot is not None:
        from lazarus_mcp.plots import Metric
        from lazarus_mcp.plots.generation import render_generation_heatmap

        try:
            files[plot] = render_generation_heatmap(
                result, plot_format(plot), Metric(plot_metric.value)
            )
        except LazarusError as exc:
            fail(str(exc))
    from lazarus_cli.render import model_header
    from lazarus_mcp.schema import to_json
    from lazarus_mcp.server.timeline import render_generation

    data = to_json(result)
    if output is not None:
        files = {output: data, **files}
    write_files(files)
    text = "\n".join([*model_header(result.model), "", render_generation(result)])
    emit_text(data + b"\n", text, list(files), json_out)
