"""The CLI's pictures: which files to draw, checked before the model loads, then drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lazarus_cli.inputs import numbered
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.schema import AnalysisResult


@dataclass(frozen=True)
class Figures:
    heatmap: Path | None
    tracks: Path | None
    metric: str


def plan(heatmap: Path | None, tracks: Path | None, metric: str, track: list[str]) -> Figures:
    """Fail early (before a model loads) on a bad file name or a chart without its data."""
    from lazarus_mcp.plots import plot_format

    for path in (heatmap, tracks):
        if path is not None:
            plot_format(path)
    if tracks is not None and not track:
        raise InvalidRequestError("--plot-tracks needs tokens to track: add --track TOKEN")
    if heatmap is not None and metric == "rank" and not track:
        raise InvalidRequestError("--plot-metric rank needs a tracked token: add --track TOKEN")
    return Figures(heatmap, tracks, metric)


def draw(figures: Figures, results: list[AnalysisResult]) -> dict[Path, bytes]:
    """File -> content for every picture; several prompts get numbered files (grid-1.png)."""
    if figures.heatmap is None and figures.tracks is None:
        return {}
    from lazarus_mcp.plots import Metric, plot_format, render_heatmap, render_tracks

    out: dict[Path, bytes] = {}
    for n, result in enumerate(results):
        if figures.heatmap is not None:
            path = numbered(figures.heatmap, n, len(results))
            out[path] = render_heatmap(result, plot_format(path), Metric(figures.metric))
        if figures.tracks is not None:
            path = numbered(figures.tracks, n, len(results))
            out[path] = render_tracks(result, plot_format(path))
    return out
