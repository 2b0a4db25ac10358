"""``lazarus introspect families`` lists the registry; the support level reaches every output."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.modeling.families import FAMILIES, NOT_RESIDUAL
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from tests.checkpoints import build_checkpoint


def test_families_lists_every_registry_family_with_its_support() -> None:
    result = CliRunner().invoke(app, ["introspect", "families", "--json"])
    assert result.exit_code == 0
    rows = {row["family"]: row for row in json.loads(result.stdout)}
    assert {f for f, r in rows.items() if r["support"] == "verified"} == set(FAMILIES)
    assert rows["(others)"]["support"] == "self-checked"
    assert {f for f, r in rows.items() if r["support"] == "refused"} == set(NOT_RESIDUAL)
    assert rows["starcoder2"]["port_corrections"] == ["starcoder2_gelu"]
    assert rows["cohere"]["head"] == ["logits x logit_scale"]
    text = CliRunner().invoke(app, ["introspect", "families"]).stdout
    assert all(f"\n{family} " in text for family in FAMILIES)


def test_info_shows_the_support_level(tmp_path: Path) -> None:
    path = build_checkpoint(
        tmp_path / "minicpm", "minicpm", dim_model_base=16, scale_depth=1.4, scale_emb=12.0
    )
    result = CliRunner().invoke(app, ["introspect", "info", "-m", str(path)])
    assert result.exit_code == 0, result.output
    assert "  Support: self-checked" in result.stdout
    loaded = worker.run_sync(load, str(path))
    assert loaded.info.support == "self-checked"


def test_mcp_text_shows_the_support_level(tmp_path: Path) -> None:
    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.schema import AnalysisConfig
    from lazarus_mcp.tools.models import ModelStatus, render_status
    from lazarus_mcp.tools.text import render_analysis

    path = build_checkpoint(tmp_path / "gpt2", "gpt2")
    loaded = worker.run_sync(load, str(path))
    status = ModelStatus(**loaded.info.model_dump(), already_loaded=False)
    assert "gpt2 (verified)" in render_status(status)
    result = worker.run_sync(analyze_loaded, loaded, "one two", AnalysisConfig())
    assert render_analysis(result).splitlines()[0].endswith("; lens verified")
