"""``lazarus``: the command people run. Parses options, calls the core, renders the result.

Heavy imports (MLX, mlx-lm, transformers) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from lazarus_mcp.server.main import serve_and_run

if TYPE_CHECKING:
    from lazarus_mcp.schema import AnalysisConfig

app = typer.Typer(
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


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def parse_layers(text: str) -> list[int]:
    try:
        layers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        fail(f"--layers takes comma-separated integers such as 0,4,-1, not {text!r}")
    if not layers:
        fail("--layers is empty: give block indices such as 0,4,-1")
    return layers


def check_writable(path: Path) -> None:
    parent = path.expanduser().resolve().parent
    if path.is_dir():
        fail(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        fail(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        fail(f"cannot write {path}: directory {parent} is not writable")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside the target, then rename: never a half-written file."""
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_config(
    strategy: Strategy | None,
    all_layers: bool,
    layer_step: int,
    layers: str | None,
    track: list[str],
    top_k: int,
    embedding_scale: float | None,
    raw: bool,
) -> AnalysisConfig:
    from pydantic import ValidationError

    from lazarus_mcp.lens.layers import choose_strategy
    from lazarus_mcp.schema import AnalysisConfig, LayerStrategy

    custom = parse_layers(layers) if layers is not None else None
    wanted = LayerStrategy(strategy.value) if strategy is not None else None
    chosen = choose_strategy(wanted, custom, all_layers)
    try:
        return AnalysisConfig(
            layer_strategy=chosen,
            layer_step=layer_step,
            custom_layers=custom,
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


@introspect.command("analyze")
def analyze(
    model: ModelOpt,
    prompt: Annotated[str, typer.Option("-p", "--prompt", help="The text to analyze.")],
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
    """Run the logit lens on a prompt: what each layer would predict for the next token."""
    setup_logging(verbose)
    raise_limits(
        max_prompt_tokens=max_prompt_tokens,
        max_prompt_chars=max_prompt_chars,
        call_timeout=call_timeout,
    )
    config = build_config(
        layer_strategy, all_layers, layer_step, layers, track or [], top_k, embedding_scale, raw
    )
    if output is not None:
        check_writable(output)
    import anyio

    from lazarus_cli import render
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.introspection import ModelAnalyzer
    from lazarus_mcp.schema import to_json

    async def run_analysis():  # type: ignore[no-untyped-def]
        opening = ModelAnalyzer.from_pretrained(
            model, dtype=dtype.value, device=device.value if device else None
        )
        async with opening as analyzer:
            return await analyzer.analyze(prompt, config)

    try:
        result = anyio.run(run_analysis)
    except LazarusError as exc:
        fail(str(exc))
    data = to_json(result)
    if output is not None:
        try:
            write_atomic(output, data)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
    if json_out:
        sys.stdout.write(data.decode() + "\n")
    else:
        typer.echo(render.analysis(result))
        if output is not None:
            typer.echo(f"\nWrote {output}")


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
    import anyio

    from lazarus_cli import render
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.introspection import ModelAnalyzer
    from lazarus_mcp.schema import to_json

    async def load():  # type: ignore[no-untyped-def]
        opening = ModelAnalyzer.from_pretrained(
            model, dtype=dtype.value, device=device.value if device else None
        )
        return await opening

    try:
        analyzer = anyio.run(load)
    except LazarusError as exc:
        fail(str(exc))
    if json_out:
        sys.stdout.write(to_json(analyzer.info).decode() + "\n")
    else:
        typer.echo(render.model_info(analyzer.info))


@app.command("diagnostics")
def diagnostics(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    device: DeviceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Show what computes here: the BLAS behind MLX's CPU matmuls, its threads, the device and
    the dtype --dtype auto picks on it."""
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


# The MCP server, beside ``lazarus-mcp`` with the same options.
app.command("serve")(serve_and_run)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
