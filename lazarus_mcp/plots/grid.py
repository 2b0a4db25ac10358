"""The numbers a picture shows, taken from a result: rows (embedding output, blocks) by
positions, each cell's top token and the chosen metric."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.plots.labels import visible
from lazarus_mcp.schema import AnalysisResult, LayerPrediction, TokenEvolution

# Past this many cells a heatmap's labels cannot be read at any sensible size (a 40-inch
# figure, 5-point text): the caller is asked to choose fewer positions or layers.
MAX_CELLS = 6000


class Metric(str, Enum):
    probability = "probability"
    entropy = "entropy"
    kl = "kl"
    rank = "rank"


METRIC_TITLES = {
    Metric.probability: "probability of the top token",
    Metric.entropy: "entropy (nats)",
    Metric.kl: "KL(final \u2016 layer) (nats)",
    Metric.rank: "rank of {token} (1 = top)",
}


@dataclass
class PlotGrid:
    """Row-major numbers for one picture: ``values[r][p]`` at row r (bottom = first) and
    position p; ``top[r][p]`` the top token there."""

    title: str
    metric: Metric
    metric_title: str
    row_labels: list[str]
    positions: list[int]
    position_tokens: list[str]
    values: list[list[float]]
    top: list[list[str]]
    cells: list[list[LayerPrediction]]
    evolutions: list[list[TokenEvolution]]  # per position
    x_label: str = "input token and position (each cell shows the predicted next token)"


def row_label(layer_idx: int | None) -> str:
    return "emb" if layer_idx is None else str(layer_idx)


def _value(metric: Metric, pred: LayerPrediction, evo: list[TokenEvolution], row: int) -> float:
    if metric is Metric.probability:
        return pred.top_probability
    if metric is Metric.entropy:
        return pred.entropy
    if metric is Metric.kl:
        return pred.kl_divergence
    return float(evo[0].layers[row].rank)


def grid_of(result: AnalysisResult, metric: Metric = Metric.probability) -> PlotGrid:
    """The picture's numbers: every position of ``result.grid``, or the last position alone."""
    if metric is Metric.rank and not result.token_evolutions:
        raise InvalidRequestError("the rank metric needs a tracked token (--track / track_tokens)")
    if result.grid is not None:
        columns = [
            (c.position, c.token, c.layer_predictions, c.token_evolutions) for c in result.grid
        ]
    else:
        last = (
            result.position,
            result.tokens[-1],
            result.layer_predictions,
            result.token_evolutions,
        )
        columns = [last]
    rows = [row_label(p.layer_idx) for p in columns[0][2]]
    cells = len(rows) * len(columns)
    if cells > MAX_CELLS:
        raise InvalidRequestError(
            f"the grid has {cells} cells ({len(rows)} rows x {len(columns)} positions); a plot "
            f"draws at most {MAX_CELLS} legibly: choose fewer positions (e.g. positions -64..-1 "
            "as a list) or fewer layers (layer_step, custom layers)"
        )
    values = [[_value(metric, col[2][r], col[3], r) for col in columns] for r in range(len(rows))]
    tracked = result.token_evolutions[0].token if result.token_evolutions else ""
    return PlotGrid(
        title=f"{result.model.model_id}: {result.prompt}"
        + ("" if result.lens.kind == "logit" else f"  [{result.lens.kind} lens]"),
        metric=metric,
        metric_title=METRIC_TITLES[metric].format(token=visible(tracked)),
        row_labels=rows,
        positions=[c[0] for c in columns],
        position_tokens=[c[1] for c in columns],
        values=values,
        top=[[col[2][r].top_token for col in columns] for r in range(len(rows))],
        cells=[[col[2][r] for col in columns] for r in range(len(rows))],
        evolutions=[col[3] for col in columns],
    )
