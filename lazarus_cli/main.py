"""``lazarus``: the command people run. Parses options, calls the core, renders the result.

Heavy imports (MLX, mlx-lm, transformers) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lazarus_cli.outcome import check_writable, emit, emit_text, fail, run_core, write_files
from lazarus_mcp.server.main import serve_and_run
from lazarus_mcp.server.usage import OneLineGroup

if TYPE_CHECKING:
    from lazarus_mcp.schema import AnalysisConfig

app = typer.Typer(
    cls=OneLineGroup,
    help="Logit-lens introspection of language models on MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
introspect = typer.Typer(help="Look inside a model.", no_args_is_help=True)
app.add_typer(introspect, name="introspect")


class Strategy(str, Enum):
    all = "all"
    evenly_spaced = "evenly_spaced"
    first_last = "first_last"
    custom = "custom"


class Dtype(str, Enum):
    auto = "auto"
    native = "native"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


def parse_layers(text: str) -> list[int]:
    try:
        layers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        fail(f"--layers takes comma-separated integers such as 0,4,-1, not {text!r}")
    if not layers:
        fail("--layers is empty: give block indices such as 0,4,-1")
    return layers


def build_config(
    strategy: Strategy | None,
    all_layers: bool,
    layer_step: int,
    layers: str | None,
    track: list[str],
    top_k: int,
    embedding_scale: float | None,
    raw: bool,
    *,
    every_by_default: bool = False,
) -> AnalysisConfig:
    """The core's config from the layer options; invalid values end the command (exit 2)."""
    from pydantic import ValidationError

    from lazarus_mcp.lens.layers import layer_config
    from lazarus_mcp.schema import AnalysisConfig, LayerStrategy

    custom = parse_layers(layers) if layers is not None else None
    wanted = LayerStrategy(strategy.value) if strategy is not None else None
    try:
        return layer_config(
            AnalysisConfig,
            wanted,
            custom,
            all_layers=all_layers,
            every_by_default=every_by_default,
            layer_step=layer_step,
            top_k=top_k,
            track_tokens=track,
            use_chat_template=not raw,
            embedding_scale=embedding_scale,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        fail(f"invalid {where}: {str(err['msg']).removeprefix('Value error, ')}")


def raise_limits(
    max_prompt_tokens: int | None, max_prompt_chars: int | None, call_timeout: float | None
) -> None:
    """The core's limits (runtime/limits.py), with what the person asked to change."""
    from dataclasses import replace

    from lazarus_mcp.runtime import limits

    now = limits.current()
    limits.configure(
        replace(
            now,
            max_prompt_tokens=max_prompt_tokens or now.max_prompt_tokens,
            max_prompt_chars=max_prompt_chars or now.max_prompt_chars,
            call_timeout=call_timeout or now.call_timeout,
        )
    )


def setup_logging(verbose: bool) -> None:
    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


ModelOpt = Annotated[
    str, typer.Option("-m", "--model", help="Local directory, Hugging Face id, or 'demo'.")
]
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        help="auto: the checkpoint's dtype on a GPU; on the CPU bfloat16 and 4-bit weights "
        "through lazarus's AVX512-BF16 kernels, float32-accurate, where the CPU has them, "
        "float32 otherwise. bfloat16: the kernel with bfloat16 inputs (faster, as a bfloat16 "
        "model). "
        "native: as stored, MLX's own ops.",
    ),
]
DeviceOpt = Annotated[Device | None, typer.Option("--device", help="MLX device (default: MLX's).")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs on stderr.")]


class PlotMetric(str, Enum):
    probability = "probability"
    entropy = "entropy"
    kl = "kl"
    rank = "rank"


@introspect.command("analyze")
def analyze(
    model: ModelOpt,
    prompt: Annotated[
        list[str] | None,
        typer.Option("-p", "--prompt", help="The text to analyze (repeatable: a batch)."),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--prompts-file",
            help="More prompts: one per line, or JSON Lines with a 'prompt' field.",
        ),
    ] = None,
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
    positions: Annotated[
        str,
        typer.Option(
            "--positions",
            help="Positions to read: last, all, or indices such as 0,3,-1 (the grid).",
        ),
    ] = "last",
    include_embeddings: Annotated[
        bool,
        typer.Option("--include-embeddings", help="Add a row for the embedding output."),
    ] = False,
    track: Annotated[
        list[str] | None,
        typer.Option("-t", "--track", help="Token to follow across layers (repeatable)."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Top tokens per layer.")] = 5,
    embedding_scale: Annotated[
        float | None,
        typer.Option("--embedding-scale", help="Replace the model's embedding scale for this run."),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Do not apply the chat template.")] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write the result as JSON (JSON Lines for several prompts)."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the JSON result instead of text.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the layers x positions heatmap: .png, .svg or .html."),
    ] = None,
    plot_metric: Annotated[
        PlotMetric,
        typer.Option(
            "--plot-metric", help="Cell colour: probability, entropy, kl, or rank (of --track)."
        ),
    ] = PlotMetric.probability,
    plot_tracks: Annotated[
        Path | None,
        typer.Option("--plot-tracks", help="Chart the tracked tokens: .png, .svg or .html."),
    ] = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
    max_prompt_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Raise the prompt limit in tokens (default 4096)."),
    ] = None,
    max_prompt_chars: Annotated[
        int | None,
        typer.Option(min=1, help="Raise the prompt limit in characters (default 100000)."),
    ] = None,
    call_timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds the analysis may run (default 300).")
    ] = None,
) -> None:
    """Run the logit lens on prompts: what each layer would predict for the next token."""
    setup_logging(verbose)
    raise_limits(
        max_prompt_tokens=max_prompt_tokens,
        max_prompt_chars=max_prompt_chars,
        call_timeout=call_timeout,
    )
    from lazarus_cli import pictures
    from lazarus_cli.inputs import PromptsFileError, read_prompts_file
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.lens.positions import parse_positions

    texts = list(prompt or [])
    if prompts_file is not None:
        try:
            texts += read_prompts_file(prompts_file)
        except PromptsFileError as exc:
            fail(str(exc))
    if not texts:
        fail("give a prompt: -p TEXT (repeatable) or --prompts-file FILE")
    try:
        spec = parse_positions(positions)
        figures = pictures.plan(plot, plot_tracks, plot_metric.value, track or [])
    except LazarusError as exc:
        fail(str(exc))
    config = build_config(
        layer_strategy, all_layers, layer_step, layers, track or [], top_k, embedding_scale, raw
    )
    config = config.model_copy(update={"positions": spec, "include_embeddings": include_embeddings})
    for path in [p for p in (output, plot, plot_tracks) if p is not None]:
        check_writable(path)
    from lazarus_cli import render
    from lazarus_cli.progress import TerminalProgress
    from lazarus_mcp.introspection import ModelAnalyzer
    from lazarus_mcp.schema import AnalysisResult, to_json

    bar = TerminalProgress()

    async def run_analysis() -> list[AnalysisResult]:
        opening = ModelAnalyzer.from_pretrained(
            model, dtype=dtype.value, device=device.value if device else None
        )
        analyzer = await bar.wait(f"loading {model}", opening)
        return await analyzer.analyze_batch(texts, config, on_progress=bar.update)

    results = run_core(run_analysis, on_error=bar.clear)
    try:
        drawn = pictures.draw(figures, results)
    except LazarusError as exc:
        bar.clear()
        fail(str(exc))
    if len(results) == 1:
        data = to_json(results[0])
        shown = data + b"\n"
    else:
        data = shown = b"".join(to_json(r, indent=False) + b"\n" for r in results)
    files = {} if output is None else {output: data}
    files.update(drawn)
    write_files(files)
    emit_text(shown, render.batch(results), list(files), json_out)


@introspect.command("info")
def info(
    model: ModelOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Print ModelInfo as JSON.")] = False,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Load a model and describe it: family, layers, vocab, tying, scale, soft-cap, quantization."""
    setup_logging(verbose)
    from lazarus_cli import render
    from lazarus_mcp.introspection import ModelAnalyzer

    async def load() -> ModelAnalyzer:
        opening = ModelAnalyzer.from_pretrained(
            model, dtype=dtype.value, device=device.value if device else None
        )
        return await opening

    analyzer = run_core(load)
    emit(analyzer.info, render.model_info(analyzer.info), None, json_out)


@app.command("diagnostics")
def diagnostics(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Show what computes here: BLAS, threads, device, the dtype --dtype auto picks.

    The BLAS library behind MLX's CPU matmuls and its threads, the MLX device, its dtype."""
    setup_logging(verbose)
    from lazarus_mcp.accel.diagnostics import collect, render
    from lazarus_mcp.schema import to_json

    report = collect(device.value if device else None)
    if json_out:
        sys.stdout.write(to_json(report).decode() + "\n")
    else:
        typer.echo(render(report))


def _register() -> None:
    from lazarus_cli.families import families

    introspect.command("families")(families)


_register()


# ``attribute`` and ``compare`` live in their own module and register on ``introspect``.
from lazarus_cli import comparisons as _comparisons  # noqa: E402

del _comparisons

# ``generate`` lives in its own module and registers on ``introspect``.
from lazarus_cli import generate as _generate  # noqa: E402

del _generate


# The MCP server, beside ``lazarus-mcp`` with the same options.
app.command("serve")(serve_and_run)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
