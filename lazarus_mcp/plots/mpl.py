"""PNG and SVG with matplotlib: the heatmap and the tracked-token chart.

matplotlib's object API (``Figure``), not pyplot: no global figure state and no GUI backend, so
the server can draw on any thread. Sizes follow the grid: cells get between 0.3 and 0.9 inch
of width within a 40-inch figure, text between 4 and 9 points, labels clipped to what fits.

A picture stops midway at the call's deadline: the cell labels are drawn by ``savefig``, which
took 69 s for a 7 x 817 grid PNG on this machine under load (SVG 56 s), so a checkpoint artist
that draws nothing sits after every block of ``CELL_BLOCK`` labels and checks the deadline when
the renderer reaches it (artists of one z-order are drawn in the order they were added).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.plots.colors import bounds, reversed_scale, text_colour
from lazarus_mcp.plots.grid import Metric, PlotGrid
from lazarus_mcp.plots.labels import clip, label
from lazarus_mcp.runtime.limits import check_interrupt_of_call
from lazarus_mcp.schema import AnalysisResult

CELL_BLOCK = 32  # cell labels between two checks of the deadline (~0.4 s of drawing, loaded)


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InvalidRequestError(
            "PNG and SVG plots need matplotlib, a dependency of lazarus-mcp that is missing "
            "here: pip install matplotlib (an .html plot needs nothing more)"
        ) from exc
    return Figure


def _save(fig: Any, fmt: str) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    # Text stays text in SVG (small, searchable); a missing glyph (CJK in DejaVu) warns only.
    with matplotlib.rc_context({"svg.fonttype": "none"}), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
    return buf.getvalue()


def _checkpoint() -> Any:
    """An artist that draws nothing and checks the call's deadline when it is drawn."""
    from matplotlib.artist import Artist

    class Checkpoint(Artist):
        zorder = 3  # a Text's: drawn among the cell labels, in the order added

        def draw(self, renderer: Any) -> None:
            check_interrupt_of_call()

    return Checkpoint()


def _clamp(x: float, low: float, high: float) -> float:
    return min(high, max(low, x))


def heatmap(grid: PlotGrid, fmt: str) -> bytes:
    figure = _figure_class()  # first: without matplotlib, the one-line error, not a traceback
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    rows, cols = len(grid.row_labels), len(grid.positions)
    cell_w = _clamp(40.0 / cols, 0.3, 0.9)
    cell_h = _clamp(20.0 / rows, 0.22, 0.42)
    fig = figure(figsize=(2.4 + cols * cell_w, 2.6 + rows * cell_h))
    ax = fig.add_subplot()
    low, high = bounds(grid)
    norm = LogNorm(low, high) if grid.metric is Metric.rank else Normalize(low, high)
    cmap = "viridis_r" if reversed_scale(grid.metric) else "viridis"
    data = np.asarray(grid.values, dtype=float)
    image = ax.imshow(data, origin="lower", aspect="auto", cmap=cmap, norm=norm)
    size = _clamp(min(cell_h * 72 * 0.42, cell_w * 72 * 0.26), 4.0, 9.0)
    width = max(2, int(cell_w * 72 * 0.85 / (size * 0.75)))  # characters that fit a cell
    for r in range(rows):
        for p in range(cols):
            if (r * cols + p) % CELL_BLOCK == 0:
                check_interrupt_of_call()
                ax.add_artist(_checkpoint())
            rgba = image.cmap(image.norm(data[r, p]))
            ax.text(
                p,
                r,
                label(grid.top[r][p], width),
                ha="center",
                va="center",
                fontsize=size,
                color=text_colour(rgba[:3]),
            )
    tick = _clamp(size + 1, 5.0, 9.0)
    ax.set_xticks(range(cols))
    ax.set_xticklabels(
        [f"{label(t, 12)} {p}" for p, t in zip(grid.positions, grid.position_tokens, strict=True)],
        rotation=90,
        fontsize=tick,
    )
    ax.set_yticks(range(rows))
    ax.set_yticklabels(grid.row_labels, fontsize=tick)
    ax.set_xlabel(grid.x_label)
    ax.set_ylabel("layer (emb = embedding output)")
    ax.set_title(clip(grid.title, 100), fontsize=10, loc="left")
    bar = fig.colorbar(image, ax=ax, fraction=0.04 if cols > 8 else 0.08, pad=0.02)
    bar.set_label(grid.metric_title)
    return _save(fig, fmt)


def tracks(result: AnalysisResult, fmt: str) -> bytes:
    figure = _figure_class()
    from matplotlib.ticker import FuncFormatter

    evolutions = result.token_evolutions
    if not evolutions:
        raise InvalidRequestError("a tracks plot needs tracked tokens (--track / track_tokens)")
    steps = evolutions[0].layers
    xs = list(range(len(steps)))
    names = ["emb" if s.layer_idx is None else str(s.layer_idx) for s in steps]
    fig = figure(figsize=(_clamp(3 + 0.25 * len(xs), 6.0, 16.0), 4.2))
    prob_ax, rank_ax = fig.subplots(1, 2)
    for evo in evolutions:
        check_interrupt_of_call()
        name = label(evo.token, 16)
        prob_ax.plot(xs, [s.probability for s in evo.layers], marker="o", ms=3, label=name)
        rank_ax.plot(xs, [s.rank for s in evo.layers], marker="o", ms=3, label=name)
    prob_ax.set_ylim(0, 1)
    prob_ax.set_ylabel("probability")
    rank_ax.set_yscale("log")
    worst = max(max(s.rank for s in evo.layers) for evo in evolutions)
    rank_ax.set_ylim(max(10, worst) * 1.5, 0.8)  # inverted: rank 1 at the top
    rank_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 10, not 10^0
    rank_ax.set_ylabel("rank (log scale, 1 at the top)")
    every = max(1, len(xs) // 16)
    for ax in (prob_ax, rank_ax):
        ax.set_xticks(xs[::every])
        ax.set_xticklabels(names[::every], fontsize=8)
        ax.set_xlabel("layer (emb = embedding output)")
        ax.grid(alpha=0.3)
    prob_ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        clip(f"{result.model.model_id}: {result.prompt}", 100), fontsize=10, x=0.01, ha="left"
    )
    fig.tight_layout()
    return _save(fig, fmt)
