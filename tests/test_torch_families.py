"""Optional: every registry family built by transformers, saved in its own layout, loaded by
lazarus; the lens matches transformers' at every block, raw and with the chat template.

Skipped where torch is not installed (``pip install torch==2.13.0`` gives a CPU build).
``examples/family_parity.py`` prints the same comparison as a table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.family_configs import FAMILY_CONFIGS
from tests.parity_check import PROB_TOL, assert_matches_reference

torch = pytest.importorskip("torch")

from tests.torch_families import (  # noqa: E402
    PROMPT,
    build_with_transformers,
    chat_ids,
    raw_ids,
    reference_lens,
)

STRICT = 1e-5


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_family_lens_matches_transformers(tmp_path: Path, family: str) -> None:
    model = build_with_transformers(tmp_path / family, family)
    loaded = worker.run_sync(load, str(tmp_path / family))
    assert loaded.info.support == "verified"
    for raw in (True, False):
        ids = raw_ids(tmp_path / family, PROMPT) if raw else chat_ids(tmp_path / family, PROMPT)
        config = AnalysisConfig(
            layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=not raw
        )
        result = worker.run_sync(analyze_loaded, loaded, PROMPT, config).model_dump(mode="json")
        case = {
            "input_ids": ids,
            "tokens": result["tokens"],
            "layers": [
                {"layer_idx": i, "logprobs": row.tolist()}
                for i, row in enumerate(reference_lens(model, ids))
            ],
        }
        assert len(ids) > 8  # longer than every sliding window in the test configs
        # PROB_TOL bounds every probability; float32 against float32 lands far below it
        # (worst seen 4e-7), and a port difference such as starcoder2's exact GELU does not.
        assert assert_matches_reference(result, case) <= min(PROB_TOL, STRICT)
