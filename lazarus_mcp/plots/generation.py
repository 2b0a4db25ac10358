"""The generation's picture: layers x generated tokens, drawn by the grid's heatmap code.

Each column is one step: the token the model wrote (the label below it) and, in each cell, the
top token of that block's lens at the position that emitted it, coloured by the metric. The
rank metric is the emitted token's rank at each block (bright: already top-1), so the picture
shows at what depth each written token was decided.
"""

from __future__ import annotations

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.plots.grid import MAX_CELLS, Metric, PlotGrid, row_label
from lazarus_mcp.schema.analysis import LayerPrediction
from lazarus_mcp.schema.generation import GenerationResult, GenerationStep

TITLES = {
    Metric.probability: "probability of the top token",
    Metric.entropy: "entropy (nats)",
    Metric.kl: "KL(final \u2016 layer) (nats)",
    Metric.rank: "rank of the written token (1 = top)",
}


def _value(metric: Metric, step: GenerationStep, row: int, pred: LayerPrediction) -> float:
    if metric is Metric.probability:
        return pred.top_probability
    if metric is Metric.entropy:
        return pred.entropy
    if metric is Metric.kl:
        return pred.kl_divergence
    return float(step.emitted[row].rank)


def generation_grid(result: GenerationResult, metric: Metric = Metric.probability) -> PlotGrid:
    steps = result.steps
    if not steps:
        raise InvalidRequestError("nothing was generated, so there is nothing to plot")
    rows = [row_label(p.layer_idx) for p in steps[0].layer_predictions]
    cells = len(rows) * len(steps)
    if cells > MAX_CELLS:
        raise InvalidRequestError(
            f"the picture has {cells} cells ({len(rows)} layers x {len(steps)} tokens); a plot "
            f"draws at most {MAX_CELLS} legibly: generate fewer tokens or read fewer layers"
        )
    return PlotGrid(
        title=f"{result.model.model_id}: {result.prompt}",
        metric=metric,
        metric_title=TITLES[metric],
        row_labels=rows,
        positions=[s.step for s in steps],
        position_tokens=[s.token for s in steps],
        values=[
            [_value(metric, s, r, s.layer_predictions[r]) for s in steps] for r in range(len(rows))
        ],
        top=[[s.layer_predictions[r].top_token for s in steps] for r in range(len(rows))],
        cells=[[s.layer_predictions[r] for s in steps] for r in range(len(rows))],
        evolutions=[s.token_evolutions for s in steps],
        x_label="generated token and step (each cell: the layer's top prediction for it)",
    )


def render_generation_heatmap(
    result: GenerationResult, fmt: str, metric: Metric = Metric.probability
) -> bytes:
    """PNG or SVG (matplotlib); the HTML page is the analysis's (``--plot`` .html on analyze)."""
    if fmt == "html":
        raise InvalidRequestError("a generation's picture is drawn as .png or .svg")
    from lazarus_mcp.plots.mpl import heatmap

    return heatmap(generation_grid(result, metric), fmt)
