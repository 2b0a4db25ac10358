"""The grid (every position x every row, embeddings included) matches transformers at every
position, and the positions option behaves."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.lens import cells as cells_module
from lazarus_mcp.lens.positions import parse_positions, select_positions
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.conftest import PARITY, PARITY_MODELS, parity_ref
from tests.parity_check import PROB_TOL


def _extra(name: str) -> list[dict[str, Any]]:
    return json.loads((PARITY / "refs-extra" / f"{name}.json").read_text())["cases"]


def _check_cell(ours: dict[str, Any], ids: list[int], logprobs: list[float]) -> float:
    """Our top-k against the reference's top 32 at one cell; returns the worst difference."""
    ref = dict(zip(ids, np.exp(np.asarray(logprobs, dtype=np.float64)), strict=True))
    kth = sorted(ref.values(), reverse=True)[len(ours["top_k"]) - 1]
    worst = 0.0
    for t in ours["top_k"]:
        assert t["token_id"] in ref or t["probability"] <= kth + PROB_TOL
        diff = abs(t["probability"] - ref.get(t["token_id"], 0.0))
        assert diff <= PROB_TOL, (ours["layer_idx"], t, ref.get(t["token_id"]))
        worst = max(worst, diff)
    return worst


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_grid_matches_reference_at_every_position(name: str) -> None:
    loaded = worker.run_sync(load, str(PARITY / name))
    cases = parity_ref(name)["cases"]
    for case, extra in zip(cases, _extra(name), strict=True):
        if extra.get("grid") is None:
            continue
        config = AnalysisConfig(
            layer_strategy=LayerStrategy.ALL,
            top_k=10,
            use_chat_template=not case["raw"],
            positions="all",
            include_embeddings=True,
            track_tokens=[case["tokens"][-1]],
        )
        result = worker.run_sync(analyze_loaded, loaded, case["prompt"], config)
        data = result.model_dump(mode="json")
        assert data["token_ids"] == case["input_ids"]
        assert data["grid"] is not None
        assert [p["position"] for p in data["grid"]] == list(range(len(case["input_ids"])))
        worst = 0.0
        for p, column in enumerate(data["grid"]):
            assert column["token_id"] == case["input_ids"][p]
            assert column["token"] == case["tokens"][p]
            rows = column["layer_predictions"]
            assert [r["layer_idx"] for r in rows] == [r["layer_idx"] for r in extra["grid"]]
            for ours, ref_row in zip(rows, extra["grid"], strict=True):
                cell = ref_row["positions"][p]
                worst = max(worst, _check_cell(ours, cell["ids"], cell["logprobs"]))
            # The last block's lens is the model's own output at this position; KL 0 there.
            assert rows[-1]["top_k"] == column["final_prediction"]
            assert rows[-1]["kl_divergence"] == 0.0
            evo = column["token_evolutions"][0]
            assert [s["layer_idx"] for s in evo["layers"]] == [r["layer_idx"] for r in rows]
            assert evo["layers"][-1]["rank"] == evo["final_rank"]
        # The last column is the top-level (last-position) lens, which the refs also hold.
        last = data["grid"][-1]
        assert last["layer_predictions"] == data["layer_predictions"]
        assert last["final_prediction"] == data["final_prediction"]
        ref_emb = np.exp(np.asarray(case["embeddings"]["logprobs"]))
        for t in data["layer_predictions"][0]["top_k"]:
            assert abs(t["probability"] - ref_emb[t["token_id"]]) <= PROB_TOL
        assert worst < (2e-3 if name == "gemma" else 1e-4), worst


def test_chunked_grid_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positions taken one per chunk give the same numbers as all at once."""
    loaded = worker.run_sync(load, str(PARITY / "gemma3-text"))
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        positions="all",
        include_embeddings=True,
        track_tokens=["a", " the"],
        use_chat_template=False,
    )
    prompt = "The capital of France is Paris, and the capital of Spain is"
    whole = worker.run_sync(analyze_loaded, loaded, prompt, config).model_dump(mode="json")
    monkeypatch.setattr(cells_module, "CHUNK_BYTES", 1)
    assert cells_module.chunk_cells(8, loaded.info.vocab_size) == 1
    chunked = worker.run_sync(analyze_loaded, loaded, prompt, config).model_dump(mode="json")
    assert chunked == whole


def test_positions_list_and_defaults() -> None:
    loaded = worker.run_sync(load, str(PARITY / "llama"))
    base = {"layer_strategy": LayerStrategy.FIRST_LAST, "use_chat_template": False}
    prompt = "The capital of France is"
    plain = worker.run_sync(analyze_loaded, loaded, prompt, AnalysisConfig(**base))
    dumped = plain.model_dump(mode="json")
    # Default: no grid, no new config keys, no embeddings row.
    assert "grid" not in dumped
    assert "positions" not in dumped["config"] and "include_embeddings" not in dumped["config"]
    some = worker.run_sync(
        analyze_loaded, loaded, prompt, AnalysisConfig(**base, positions=[-1, 0, 2, 0])
    )
    assert some.grid is not None
    assert [p.position for p in some.grid] == [0, 2, len(some.tokens) - 1]
    # Computed with other positions beside it: equal up to float rounding.
    for ours, alone in zip(some.grid[-1].layer_predictions, plain.layer_predictions, strict=True):
        assert [t.token_id for t in ours.top_k] == [t.token_id for t in alone.top_k]
        assert ours.top_probability == pytest.approx(alone.top_probability, abs=1e-6)
        assert ours.entropy == pytest.approx(alone.entropy, abs=1e-5)
    assert some.model_dump(mode="json")["config"]["positions"] == [-1, 0, 2, 0]
    with pytest.raises(InvalidRequestError, match="position 9 is out of range"):
        worker.run_sync(analyze_loaded, loaded, prompt, AnalysisConfig(**base, positions=[9]))


def test_position_parsing() -> None:
    assert parse_positions("last") == "last"
    assert parse_positions(" ALL ") == "all"
    assert parse_positions("0, 3,-1") == [0, 3, -1]
    with pytest.raises(InvalidRequestError, match="comma-separated integers"):
        parse_positions("first")
    assert select_positions([0, -1, -1], 4) == [0, 3]
    assert select_positions("all", 3) == [0, 1, 2]
    with pytest.raises(InvalidRequestError, match="-5 is out of range"):
        select_positions([-5], 4)
