"""One entry per picture: the format follows the file's suffix."""

from __future__ import annotations

from pathlib import PurePath

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.plots.grid import Metric, grid_of
from lazarus_mcp.schema import AnalysisResult

FORMATS = ("png", "svg", "html")


def plot_format(path: str | PurePath) -> str:
    """The format a file name asks for, or a one-line error naming the ones there are."""
    suffix = PurePath(path).suffix.lower().lstrip(".")
    fmt = "html" if suffix == "htm" else suffix
    if fmt not in FORMATS:
        raise InvalidRequestError(
            f"cannot plot to {str(path)!r}: the file name must end in .png, .svg or .html"
        )
    return fmt


def render_heatmap(result: AnalysisResult, fmt: str, metric: Metric = Metric.probability) -> bytes:
    """The layers x positions heatmap of ``result`` as PNG, SVG or a self-contained page."""
    grid = grid_of(result, metric)
    if fmt == "html":
        from lazarus_mcp.plots.html import heatmap_page

        return heatmap_page(grid, result)
    from lazarus_mcp.plots.mpl import heatmap

    return heatmap(grid, fmt)


def render_tracks(result: AnalysisResult, fmt: str) -> bytes:
    """The tracked tokens' probability and rank across the layers, at the last position."""
    if not result.token_evolutions:
        raise InvalidRequestError("a tracks plot needs tracked tokens (--track / track_tokens)")
    if fmt == "html":
        from lazarus_mcp.plots.html import tracks_page

        return tracks_page(result)
    from lazarus_mcp.plots.mpl import tracks

    return tracks(result, fmt)
