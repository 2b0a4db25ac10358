"""The lens matches what PyTorch + transformers compute for every parity checkpoint and case."""

from __future__ import annotations

import json
import subprocess

import pytest

from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer
from tests.conftest import PARITY, PARITY_MODELS, console_script, parity_ref
from tests.parity_check import assert_matches_reference

pytestmark = pytest.mark.anyio


def _config(case: dict) -> AnalysisConfig:
    return AnalysisConfig(
        layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=not case["raw"]
    )


@pytest.mark.parametrize("name", PARITY_MODELS)
async def test_python_api_matches_reference(name: str) -> None:
    ref = parity_ref(name)
    async with ModelAnalyzer.from_pretrained(str(PARITY / name)) as analyzer:
        info = analyzer.info
        assert info.family == ref["model_type"]
        assert info.num_layers == ref["num_layers"]
        assert info.hidden_size == ref["hidden_size"]
        assert info.vocab_size == ref["vocab_size"]
        assert info.tied_embeddings == ref["tie_word_embeddings"]
        assert info.final_logit_softcap == ref["final_logit_softcapping"]
        for case in ref["cases"]:
            result = await analyzer.analyze(case["prompt"], _config(case))
            data = result.model_dump(mode="json")
            assert result.chat_template_applied == (not case["raw"])
            assert result.captured_layers == list(range(ref["num_layers"]))
            # The tolerance is 2e-3; float32 MLX should sit far below it (about 1e-5).
            assert assert_matches_reference(data, case) < 1e-4
            # The last block's lens is the model's own output distribution.
            last = data["layer_predictions"][-1]["top_k"]
            assert last == data["final_prediction"][: len(last)]


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_installed_cli_matches_reference(name: str) -> None:
    ref = parity_ref(name)
    cases = [
        next(c for c in ref["cases"] if c["raw"]),
        next(c for c in ref["cases"] if not c["raw"]),
    ]
    for case in cases:
        args = [
            console_script("lazarus"),
            "introspect",
            "analyze",
            "-m",
            str(PARITY / name),
            "-p",
            case["prompt"],
        ]
        args += ["--all-layers", "--top-k", "10", "--json"] + (["--raw"] if case["raw"] else [])
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert_matches_reference(json.loads(proc.stdout), case)
