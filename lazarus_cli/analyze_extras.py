"""What ``lazarus introspect analyze`` adds to the analyze tool: prompts (``-p`` repeatable, a
prompts file), picture files, and JSON Lines for several prompts.

The MCP tool takes ``prompt`` or ``prompts`` and returns images; a command takes ``-p`` once or
more and draws files. The values still go through the tool's input model and core function.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from lazarus_cli import pictures
from lazarus_cli.commands import Extras
from lazarus_cli.outcome import fail


def _option(name: str, kind: Any, *flags: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind, typer.Option(*flags, help=help)],
    )


OPTIONS = [
    _option(
        "prompt_texts", list[str] | None, "-p", "--prompt", help="The text (repeatable: a batch)."
    ),
    _option(
        "prompts_file",
        Path | None,
        "--prompts-file",
        help="More prompts: one per line, or JSON Lines with a 'prompt' field.",
    ),
    _option(
        "plot_file",
        Path | None,
        "--plot",
        help="Draw the layers x positions heatmap: .png, .svg or .html.",
    ),
    _option(
        "plot_tracks",
        Path | None,
        "--plot-tracks",
        help="Chart the tracked tokens: .png, .svg or .html.",
    ),
]


def before(values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    from lazarus_cli.inputs import PromptsFileError, read_prompts_file
    from lazarus_mcp.errors import LazarusError

    texts = list(given.get("prompt_texts") or [])
    if given.get("prompts_file") is not None:
        try:
            texts += read_prompts_file(given["prompts_file"])
        except PromptsFileError as exc:
            fail(str(exc))
    if not texts:
        fail("give a prompt: -p TEXT (repeatable) or --prompts-file FILE")
    metric = values.get("plot_metric", "probability")
    try:
        pictures.plan(
            given.get("plot_file"), given.get("plot_tracks"), metric, values.get("track_tokens", [])
        )
    except LazarusError as exc:
        fail(str(exc))
    prompts = {"prompt": texts[0]} if len(texts) == 1 else {"prompts": texts}
    # The gate counts the heatmap's cells before any compute when one is drawn.
    return {**values, **prompts, "plot": given.get("plot_file") is not None}


def paths(given: dict[str, Any]) -> list[Path]:
    return [p for p in (given.get("plot_file"), given.get("plot_tracks")) if p is not None]


def finish(result: Any, given: dict[str, Any]) -> tuple[bytes, bytes, str, dict[Path, bytes]]:
    from lazarus_cli import render
    from lazarus_mcp.runtime import limits
    from lazarus_mcp.schema import AnalysisBatch, to_json

    results = result.results if isinstance(result, AnalysisBatch) else [result]
    figures = pictures.Figures(
        given.get("plot_file"),
        given.get("plot_tracks"),
        str(getattr(given.get("plot_metric"), "value", given.get("plot_metric") or "probability")),
    )
    limits.check_interrupt_of_call()
    drawn = pictures.draw(figures, results)
    if len(results) == 1:
        data = to_json(results[0])
        shown = data + b"\n"
    else:
        data = shown = b"".join(to_json(r, indent=False) + b"\n" for r in results)
    return data, shown, render.batch(results), drawn


EXTRAS = Extras(options=OPTIONS, before=before, paths=paths, finish=finish)
