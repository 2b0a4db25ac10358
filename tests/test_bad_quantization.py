"""A config whose quantization block holds nonsense is a one-line load error on every
interface: core, CLI (exit 2) and MCP (an error result, not "internal error")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from typer.testing import CliRunner

from lazarus_cli.main import app
from lazarus_mcp.errors import ModelLoadError
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.app import create_server
from tests.checkpoints import build_checkpoint

BAD = [
    ({"bits": "abc"}, "bits must be an integer"),
    ({"bits": "abc", "group_size": 64}, "bits must be an integer"),
    ({"bits": 4, "group_size": "x"}, "group_size must be an integer"),
    ({"bits": 4.5, "group_size": 64}, "bits must be an integer"),
    ({"bits": True, "group_size": 64}, "bits must be an integer"),
    ({"bits": 4, "group_size": 0}, "group_size must be an integer"),
    ({"bits": 4}, "group_size must be an integer"),
    ({"bits": 4, "group_size": 64, "mode": 3}, "mode must be a string"),
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("llama") / "llama", "llama")


def _checkpoint(tmp_path: Path, quantization: dict[str, Any], llama: Path) -> Path:
    path = Path(shutil.copytree(llama, tmp_path / "q"))
    config = json.loads((path / "config.json").read_text())
    config["quantization"] = quantization
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("quantization", "expected"), BAD)
def test_core_load_refuses_in_one_line(
    tmp_path: Path, llama: Path, quantization: dict[str, Any], expected: str
) -> None:
    path = _checkpoint(tmp_path, quantization, llama)
    with pytest.raises(ModelLoadError, match=expected) as caught:
        worker.run_sync(load, str(path))
    assert "\n" not in str(caught.value)


def test_cli_exits_2_with_one_line(tmp_path: Path, llama: Path) -> None:
    path = _checkpoint(tmp_path, {"bits": "abc", "group_size": 64}, llama)
    result = CliRunner().invoke(app, ["introspect", "analyze", "-m", str(path), "-p", "x"])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: config.json in {path} has an invalid quantization: bits must be an integer "
        "from 1 to 8, not 'abc'"
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mcp_answers_an_error_result_not_an_internal_error(
    tmp_path: Path, llama: Path
) -> None:
    path = _checkpoint(tmp_path, {"bits": "abc", "group_size": 64}, llama)
    good = llama
    async with Client(create_server(ModelCache(max_models=2))) as client:
        with anyio.fail_after(60):
            bad = await client.call_tool("analyze", {"model": str(path), "prompt": "x"})
        assert bad.is_error
        text = " ".join(getattr(part, "text", "") for part in bad.content)
        assert "bits must be an integer" in text and "internal error" not in text.lower()
        with anyio.fail_after(60):
            answered = await client.call_tool("analyze", {"model": str(good), "prompt": "x"})
        assert not answered.is_error, answered.content
