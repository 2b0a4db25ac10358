"""Pictures of a lens result: the layers x positions heatmap and the tracked-token chart.

PNG and SVG are drawn with matplotlib (a dependency: MCP ``plot: true`` returns a PNG);
the HTML page is written by hand, self-contained (inline CSS, JavaScript and data; no request
leaves the page), and needs nothing beyond the standard library. Every function takes the
result contract, never the model, so the CLI, the MCP server and the API draw the same picture.
"""

from __future__ import annotations

from lazarus_mcp.plots.grid import MAX_CELLS, Metric, PlotGrid, grid_of
from lazarus_mcp.plots.render import FORMATS, plot_format, render_heatmap, render_tracks

__all__ = [
    "FORMATS",
    "MAX_CELLS",
    "Metric",
    "PlotGrid",
    "grid_of",
    "plot_format",
    "render_heatmap",
    "render_tracks",
]
