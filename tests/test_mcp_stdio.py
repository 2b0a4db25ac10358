"""The installed ``lazarus-mcp`` over stdio, spawned by the SDK's stdio client or by hand.

Also the identity of the three interfaces: for the same inputs, ``lazarus introspect analyze
-o`` JSON, the MCP tool's structured content (through the JSON wire) and the Python API's
``model_dump(mode="json")`` are the same JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.main import parse_args, parse_size
from lazarus_mcp.tools.lens import AnalyzeInput
from tests.conftest import PARITY, ROOT, console_script, parity_ref
from tests.parity_check import assert_matches_reference

pytestmark = pytest.mark.anyio

LLAMA = str(PARITY / "llama")


@asynccontextmanager
async def spawned(*args: str, errlog: Any = sys.stderr) -> AsyncIterator[ClientSession]:
    # The whole environment: the SDK's default passes only HOME and PATH, so a PYTHONPATH naming
    # the code under test would be lost and an installed copy would answer.
    params = StdioServerParameters(
        command=console_script("lazarus-mcp"), args=list(args), env=dict(os.environ)
    )
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(60):
            await session.initialize()
        yield session


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.content and result.content[0].text
    return result.structured_content


async def test_stdio_initialize_list_and_call() -> None:
    case = next(c for c in parity_ref("llama")["cases"] if c["raw"])
    async with spawned("--max-models", "3", "--memory-budget", "64MiB") as session:
        tools = (await session.list_tools()).tools
        assert {t.name for t in tools} == {
            "analyze",
            "track_tokens",
            "attribute",
            "compare",
            "generate",
            "model_info",
            "loaded_models",
        }
        assert all(t.output_schema and t.annotations.read_only_hint for t in tools)
        with anyio.fail_after(120):
            data = ok(
                await session.call_tool(
                    "analyze",
                    {
                        "model": LLAMA,
                        "prompt": case["prompt"],
                        "layer_strategy": "all",
                        "top_k": 10,
                        "raw": True,
                    },
                )
            )
        assert_matches_reference(data, case)
        info = ok(await session.call_tool("model_info", {"model": LLAMA}))
        assert info["already_loaded"] is True and info["num_layers"] == 6
        bad = await session.call_tool("analyze", {"model": LLAMA, "prompt": "x", "layers": [6]})
        assert bad.is_error and bad.content[0].text.startswith("layer 6 is out of range")
        held = ok(await session.call_tool("loaded_models", {}))
        assert held["max_models"] == 3 and held["memory_budget_bytes"] == 64 * 2**20
        assert [m["model"]["model_id"] for m in held["models"]] == [LLAMA]


async def test_preload_loads_before_the_first_call(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        args = ("--preload", LLAMA, "--preload", "/no/such/model", "--log-level", "INFO")
        async with spawned(*args, errlog=errlog) as session:
            with anyio.fail_after(120):
                while not ok(await session.call_tool("loaded_models", {}))["models"]:
                    await anyio.sleep(0.2)
            info = ok(await session.call_tool("model_info", {"model": LLAMA}))
    assert info["already_loaded"] is True
    logged = log.read_text()
    assert f"preloaded {LLAMA}" in logged
    assert "--preload /no/such/model failed: model '/no/such/model' not found" in logged
    assert "Traceback" not in logged


def test_a_client_that_disconnects_mid_call_ends_the_server_cleanly() -> None:
    """Raw JSON-RPC: close stdin while a call is loading its model; every stdout line is JSON."""
    proc = subprocess.Popen(
        [console_script("lazarus-mcp")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin and proc.stdout

    def send(message: dict[str, Any]) -> None:
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        proc.stdin.flush()

    try:
        send(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        assert json.loads(proc.stdout.readline())["result"]["serverInfo"]["name"] == "lazarus"
        send({"method": "notifications/initialized"})
        arguments = {"model": LLAMA, "prompt": "Hi"}
        params = {"name": "analyze", "arguments": arguments, "_meta": {"progressToken": "t"}}
        send({"id": 2, "method": "tools/call", "params": params})
        first = json.loads(proc.stdout.readline())
        assert first["method"] == "notifications/progress"
        assert first["params"]["message"] == f"loading model {LLAMA}"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    rest = proc.stdout.read().splitlines()
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in rest if line.strip())
    assert "Traceback" not in proc.stderr.read()


FRANCE = ["-m", LLAMA, "-p", "The capital of France is"]
IDENTITY_CASES = [
    (
        [*FRANCE, "--all-layers", "--top-k", "10", "--raw", "-t", " Paris", "-t", " France"],
        {
            "model": LLAMA,
            "prompt": "The capital of France is",
            "layer_strategy": "all",
            "top_k": 10,
            "raw": True,
            "track_tokens": [" Paris", " France"],
        },
    ),
    (
        ["-m", str(PARITY / "gemma2"), "-p", "2 + 2 =", "--layers", "0,-1", "--top-k", "3"],
        {"model": str(PARITY / "gemma2"), "prompt": "2 + 2 =", "layers": [0, -1], "top_k": 3},
    ),
    (
        ["-m", str(PARITY / "gemma"), "-p", "Hello", "--embedding-scale", "4", "-s", "2"],
        {"model": str(PARITY / "gemma"), "prompt": "Hello", "embedding_scale": 4, "layer_step": 2},
    ),
    (
        ["-m", str(PARITY / "qwen3"), "-p", "Hello world"],
        {"model": str(PARITY / "qwen3"), "prompt": "Hello world"},
    ),
]


async def test_cli_json_equals_mcp_structured_content_equals_python_api(tmp_path: Path) -> None:
    async with spawned() as session:
        for n, (cli_args, tool_args) in enumerate(IDENTITY_CASES):
            out = tmp_path / f"cli-{n}.json"
            cmd = [console_script("lazarus"), "introspect", "analyze", *cli_args, "-o", str(out)]
            proc = await anyio.run_process(cmd, check=False)
            assert proc.returncode == 0, proc.stderr.decode()
            from_cli = json.loads(out.read_text())
            with anyio.fail_after(120):
                from_mcp = ok(await session.call_tool("analyze", tool_args))
            params = AnalyzeInput(**tool_args)
            async with ModelAnalyzer.from_pretrained(params.model, cache=ModelCache()) as analyzer:
                result = await analyzer.analyze(params.prompt, params.config())
            from_api = json.loads(json.dumps(result.model_dump(mode="json")))
            assert from_cli == from_mcp == from_api


def test_command_line_options() -> None:
    script = console_script("lazarus-mcp")
    shown = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    for option in ("--preload", "--max-models", "--memory-budget", "--log-level"):
        assert option in shown.stdout
    bad = subprocess.run(
        [script, "--memory-budget", "lots"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "not a size: 'lots'" in bad.stderr and bad.stdout == ""
    assert parse_size("8GB") == 8 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5g") == 1_500_000_000
    assert parse_size("1024") == 1024


def test_the_claude_desktop_example_is_a_valid_server_entry() -> None:
    config = json.loads((ROOT / "examples" / "claude_desktop_config.json").read_text())
    entry = config["mcpServers"]["lazarus"]
    assert Path(entry["command"]).is_absolute() and entry["command"].endswith("/lazarus-mcp")
    options = parse_args(entry["args"])
    assert options.preload == ["demo"] and options.memory_budget == 16 * 10**9
    assert all(isinstance(v, str) for v in entry["env"].values())


def test_the_example_client_runs_against_the_installed_server() -> None:
    script = ROOT / "examples" / "mcp_client.py"
    args = [sys.executable, str(script), "-m", LLAMA, "--raw", "-n", "3", "-t", " France"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    for heading in ("# analyze (cold", "# track_tokens", "# model_info", "# loaded_models"):
        assert heading in proc.stdout
    assert "Token ' France'" in proc.stdout and "warm:" in proc.stdout
    assert f"loading model {LLAMA}" in proc.stderr  # progress notifications reached the client
