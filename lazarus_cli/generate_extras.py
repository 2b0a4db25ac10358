"""What ``lazarus introspect generate`` adds to the generate tool: ``--plot FILE`` (the layers x
generated tokens heatmap, .png or .svg) and the model's header before the timeline.

The MCP tool returns the picture as an image (``plot``); the command draws a file. The values
still go through the tool's input model and core function.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from lazarus_cli.commands import Extras
from lazarus_cli.outcome import fail

OPTIONS = [
    inspect.Parameter(
        "plot_file",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--plot", help="Draw the layers x generated tokens heatmap: .png or .svg."
            ),
        ],
    )
]


def before(values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.plots import plot_format

    path = given.get("plot_file")
    if path is not None:
        try:
            fmt = plot_format(path)
        except LazarusError as exc:
            fail(str(exc))
        if fmt == "html":
            fail("a generation's heatmap is drawn as .png or .svg")
    # The gate counts the heatmap's cells before any compute when one is drawn.
    return {**values, "plot": path is not None}


def paths(given: dict[str, Any]) -> list[Path]:
    return [given["plot_file"]] if given.get("plot_file") is not None else []


def finish(result: Any, given: dict[str, Any]) -> tuple[bytes, bytes, str, dict[Path, bytes]]:
    from lazarus_cli.render import model_header
    from lazarus_mcp.errors import LazarusError
    from lazarus_mcp.plots import Metric, plot_format
    from lazarus_mcp.plots.generation import render_generation_heatmap
    from lazarus_mcp.runtime import limits
    from lazarus_mcp.schema import to_json
    from lazarus_mcp.tools.timeline import render_generation

    drawn: dict[Path, bytes] = {}
    path = given.get("plot_file")
    if path is not None:
        limits.check_interrupt_of_call()
        metric = Metric(str(getattr(given.get("plot_metric"), "value", None) or "probability"))
        try:
            drawn[path] = render_generation_heatmap(result, plot_format(path), metric)
        except LazarusError as exc:
            fail(str(exc))
    data = to_json(result)
    text = "\n".join([*model_header(result.model), "", render_generation(result)])
    return data, data + b"\n", text, drawn


EXTRAS = Extras(options=OPTIONS, before=before, paths=paths, finish=finish)
