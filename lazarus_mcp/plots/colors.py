"""The colour scales both renderers share: viridis (perceptually uniform, readable in grey and by
colour-blind readers) and the normalisation of each metric, so the PNG and the HTML page agree."""

from __future__ import annotations

import math

from lazarus_mcp.plots.grid import Metric, PlotGrid

# viridis sampled at 0, 1/8, ..., 1 (matplotlib's table); linear interpolation between them
# is within a few levels of 255 of the full table.
_VIRIDIS = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2D, 0x7B),
    (0x3B, 0x52, 0x8B),
    (0x2C, 0x72, 0x8E),
    (0x21, 0x91, 0x8C),
    (0x28, 0xAE, 0x80),
    (0x5E, 0xC9, 0x62),
    (0xAD, 0xDC, 0x30),
    (0xFD, 0xE7, 0x25),
]


def reversed_scale(metric: Metric) -> bool:
    """Bright = confident / close to the output: high probability, low entropy, KL and rank."""
    return metric is not Metric.probability


def bounds(grid: PlotGrid) -> tuple[float, float]:
    flat = [v for row in grid.values for v in row]
    if grid.metric is Metric.probability:
        return 0.0, 1.0
    if grid.metric is Metric.rank:
        return 1.0, max(2.0, max(flat))
    return 0.0, max(1e-6, max(flat))


def unit(grid: PlotGrid, value: float) -> float:
    """The value on [0, 1] of the colour scale (log for ranks)."""
    low, high = bounds(grid)
    if grid.metric is Metric.rank:
        t = math.log(max(value, 1.0)) / math.log(high)
    else:
        t = (value - low) / (high - low)
    t = min(1.0, max(0.0, t))
    return 1.0 - t if reversed_scale(grid.metric) else t


def viridis(t: float) -> tuple[int, int, int]:
    x = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    n = min(int(x), len(_VIRIDIS) - 2)
    f = x - n
    a, b = _VIRIDIS[n], _VIRIDIS[n + 1]
    r, g, bl = (round(a[i] + (b[i] - a[i]) * f) for i in range(3))
    return r, g, bl


def text_colour(rgb: tuple[float, float, float]) -> str:
    """Black on light cells, white on dark ones (relative luminance, 0..1 channels)."""
    r, g, b = rgb
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"
