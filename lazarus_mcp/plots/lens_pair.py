"""Two lenses side by side for one prompt: what each layer predicts under each.

One figure, one panel per lens, rows the residual streams (embedding output, then blocks), each
cell the layer's top-1 token, coloured by the probability the layer gives to the model's own
final top-1 token, with the layer's KL to the model's output beside it. Built from plain arrays
so any analysis can draw it; matplotlib's object API (no pyplot state), as ``mpl.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lazarus_mcp.plots.labels import label
from lazarus_mcp.plots.mpl import _figure_class, _save


@dataclass
class LensColumn:
    title: str  # e.g. "logit lens", "tuned lens (held-out KL 7.3)"
    top_tokens: list[str]  # per row
    target_probs: list[float]  # per row: probability of the model's final top-1 token
    kl: list[float]  # per row: KL(model output || this layer), nats


def lens_pair(rows: list[str], columns: list[LensColumn], target: str, fmt: str) -> bytes:
    """PNG/SVG bytes: ``columns`` side by side over ``rows`` (row labels, bottom to top)."""
    figure = _figure_class()(figsize=(3.2 * len(columns) + 1.2, 0.28 * len(rows) + 1.4))
    axes = figure.subplots(1, len(columns), sharey=True)
    axes = list(axes) if len(columns) > 1 else [axes]
    for ax, column in zip(axes, columns, strict=True):
        values = [[p] for p in column.target_probs]
        ax.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, origin="lower")
        for y, (token, p, kl) in enumerate(
            zip(column.top_tokens, column.target_probs, column.kl, strict=True)
        ):
            colour = "black" if p > 0.6 else "white"
            ax.text(
                0,
                y,
                f"{label(token, 14)}  KL {kl:.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )
        ax.set_xticks([])
        ax.set_title(column.title, fontsize=9)
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels(rows, fontsize=7)
    figure.suptitle(f"top-1 token per layer; colour: p({label(target, 20)})", fontsize=9)
    figure.tight_layout()
    return _save(figure, fmt)
