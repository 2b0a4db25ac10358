"""A client nobody here wrote: the MCP Inspector's command-line mode against the installed server.

The Inspector is an npm package pinned in tests/inspector/package.json; install it once with
``npm ci --prefix tests/inspector`` (CI does).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PARITY, ROOT, console_script, parity_ref
from tests.parity_check import assert_matches_reference

INSPECTOR = ROOT / "tests" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
LLAMA = str(PARITY / "llama")


def call_analyze(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return inspect(
        tmp_path, "--method", "tools/call", "--tool-name", "analyze", "--tool-arg", *args
    )


def inspect(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    if not INSPECTOR.is_file():
        pytest.fail("the MCP Inspector is not installed: run `npm ci --prefix tests/inspector`")
    # The catalog is where the Inspector keeps known servers; keep it out of the home directory.
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "catalog.json")}
    server = [console_script("lazarus-mcp"), "--log-level", "WARNING"]
    cmd = [str(INSPECTOR), "--cli", *options, "--", *server]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def parsed(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(proc.stdout)


def test_inspector_lists_the_tools_with_portable_schemas(tmp_path: Path) -> None:
    # --strict: the Inspector's tool-schema portability check fails (exit 6) on any error.
    proc = inspect(tmp_path, "--method", "tools/list", "--strict")
    assert proc.returncode == 0, proc.stderr
    tools = {tool["name"]: tool for tool in parsed(proc)["tools"]}
    assert set(tools) == {
        "analyze",
        "track_tokens",
        "attribute",
        "compare",
        "generate",
        "model_info",
        "loaded_models",
    }
    for tool in tools.values():
        assert tool["annotations"]["readOnlyHint"] is True
        assert tool["annotations"]["idempotentHint"] is True
        assert tool["outputSchema"]["type"] == "object"
    # prompt or prompts (a batch): the server says which is missing.
    assert tools["analyze"]["inputSchema"]["required"] == ["model"]


def test_inspector_calls_analyze(tmp_path: Path) -> None:
    case = next(c for c in parity_ref("llama")["cases"] if c["raw"])
    args = [f"model={LLAMA}", f"prompt={case['prompt']}", "layer_strategy=all", "top_k=10"]
    args += ["raw=true", 'track_tokens=[" France"]']
    proc = call_analyze(tmp_path, args)
    assert proc.returncode == 0, proc.stderr
    result = parsed(proc)
    assert not result.get("isError")
    assert result["content"][0]["text"].startswith(f"{LLAMA} (llama, 6 layers)")
    data = result["structuredContent"]
    assert data["config"]["top_k"] == 10 and data["config"]["use_chat_template"] is False
    assert_matches_reference(data, case)
    [evolution] = data["token_evolutions"]
    assert evolution["token"] == " France" and len(evolution["layers"]) == 6


def test_inspector_sees_an_error_result(tmp_path: Path) -> None:
    args = [f"model={LLAMA}", "prompt=Hi", "layers=[0, 9]"]
    proc = call_analyze(tmp_path, args)
    # The Inspector exits 5 when a tool returns isError: true.
    assert proc.returncode == 5, proc.stderr
    result = parsed(proc)
    assert result["isError"] is True
    assert result["content"] == [
        {
            "type": "text",
            "text": "layer 9 is out of range: this model has 6 layers "
            "(use 0..5, or -1..-6 from the end)",
        }
    ]
