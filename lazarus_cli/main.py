"""``lazarus``: the command people run. Parses options, calls the core, renders the result.

The ``introspect`` commands are built from the tool specs (``lazarus_cli/commands.py``), one per
tool, so a new tool is a new command without CLI code. Heavy imports (MLX, mlx-lm,
transformers) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lazarus_cli.options import Device, setup_logging
from lazarus_mcp.server.main import serve_and_run
from lazarus_mcp.server.usage import OneLineGroup

app = typer.Typer(
    cls=OneLineGroup,
    help="Logit-lens introspection of language models on MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
introspect = typer.Typer(help="Look inside a model.", no_args_is_help=True)
app.add_typer(introspect, name="introspect")


def _register_tools() -> None:
    """One command per tool spec (``lazarus_mcp.tools``), with the CLI's own renderings."""
    from lazarus_cli import render
    from lazarus_cli.analyze_extras import EXTRAS
    from lazarus_cli.commands import register
    from lazarus_mcp.tools import TOOLS

    renderers = {
        "attribute": render.attribution,
        "compare": render.compare,
        "model_info": lambda status: render.model_info(status),
    }
    from lazarus_cli.generate_extras import EXTRAS as GENERATE_EXTRAS

    for spec in TOOLS:
        extras = {"analyze": EXTRAS, "generate": GENERATE_EXTRAS}.get(spec.name)
        register(introspect, spec, render=renderers.get(spec.name), extras=extras)


_register_tools()


DeviceOpt = Annotated[Device | None, typer.Option("--device", help="MLX device (default: MLX's).")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs on stderr.")]


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


# ``lazarus lens fit-jacobian | train-tuned | import | info``: making lenses is not a tool call
# (minutes of MLX work writing a directory), so these commands are the CLI's own.
from lazarus_cli import lens_commands  # noqa: E402, F401

# The MCP server, beside ``lazarus-mcp`` with the same options.
app.command("serve")(serve_and_run)


def run() -> None:
    from lazarus_cli.inputs import undecodable_argument

    if (reason := undecodable_argument(sys.argv[1:])) is not None:
        typer.echo(f"error: {reason}", err=True)
        raise SystemExit(2)
    app()


if __name__ == "__main__":
    run()
