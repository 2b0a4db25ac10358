"""Pictures from real results: labels people can read, the cell limit, and each format."""

from __future__ import annotations

import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.plots import Metric, grid_of, plot_format, render_heatmap
from lazarus_mcp.plots import grid as grid_module
from lazarus_mcp.plots.labels import clip, label, visible
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy


def test_labels_make_whitespace_and_control_bytes_visible() -> None:
    assert visible(" a\n\t\x01") == "\u2423a\u21b5\u21e5\\x01"
    assert visible("") == "\u2205"
    assert clip("abcdefgh", 4) == "abc\u2026"
    assert label(" Paris", 10) == "\u2423Paris"


def test_grid_numbers_and_the_cell_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = worker.run_sync(load, "demo")
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        positions="all",
        include_embeddings=True,
        track_tokens=[" Paris"],
    )
    result = worker.run_sync(analyze_loaded, loaded, "The capital of France is", config)
    assert result.grid is not None
    grid = grid_of(result, Metric.rank)
    assert grid.row_labels == ["emb", *map(str, range(loaded.info.num_layers))]
    assert grid.positions == list(range(len(result.tokens)))
    last = result.grid[-1]
    assert grid.values[-1][-1] == last.token_evolutions[0].layers[-1].rank
    assert grid.top[0][0] == result.grid[0].layer_predictions[0].top_token
    entropy = grid_of(result, Metric.entropy)
    assert entropy.values[2][3] == result.grid[3].layer_predictions[2].entropy
    monkeypatch.setattr(grid_module, "MAX_CELLS", 10)
    with pytest.raises(InvalidRequestError, match=r"has \d+ cells .* at most 10"):
        grid_of(result)
    monkeypatch.undo()
    assert render_heatmap(result, "png").startswith(b"\x89PNG")
    # A last-position result draws as one column.
    plain = worker.run_sync(analyze_loaded, loaded, "Hi", AnalysisConfig())
    assert grid_of(plain).positions == [len(plain.tokens) - 1]
    with pytest.raises(InvalidRequestError, match="needs a tracked token"):
        grid_of(plain, Metric.rank)
    assert plot_format("a/B.HTM") == "html"


def test_a_picture_stops_midway_at_the_calls_deadline() -> None:
    """The deadline is checked while matplotlib draws the cell labels (a checkpoint artist per
    block of them), not only before and after: a 7 x 817 grid's PNG took 69 s on this machine
    under load; this 7 x ~120 one takes seconds, and stops within about the limit."""
    import time

    from lazarus_mcp.runtime import limits
    from tests.conftest import PARITY

    loaded = worker.run_sync(load, str(PARITY / "llama"))
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        positions="all",
        include_embeddings=True,
        use_chat_template=False,
        top_k=1,
    )
    prompt = "one two three four five six seven eight " * 15
    result = worker.run_sync(analyze_loaded, loaded, prompt, config)
    assert result.grid is not None and len(result.grid) > 100
    began = time.monotonic()
    with limits.call_deadline(0.2) as job, pytest.raises(limits.CallInterrupted):
        job.begin()  # as the call's first worker job does
        render_heatmap(result, "png")
    assert time.monotonic() - began < 2.5
