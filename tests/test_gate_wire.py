"""The gate over the wire, for EVERY tool of the registry: the installed ``lazarus-mcp`` over
stdio (one server per tool) and over streamable HTTP (one server for all tools).

The in-process interfaces (API, MCP in memory, the CLI) run the full hostile matrix in
``test_gate.py``; here each tool's hostile calls cross the real JSON-RPC transport: a
300,000-character prompt, a prompt past the model's context, wrong types, and for ``analyze`` a
batch grid whose result would be hundreds of MB. Each ends in a one-line error result within
seconds, and the same server answers the tool's good call right after.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from lazarus_mcp.tools import TOOLS
from lazarus_mcp.tools.spec import ToolSpec
from tests.checkpoints import build_checkpoint
from tests.conftest import PARITY, console_script
from tests.test_http import http_server

pytestmark = pytest.mark.anyio

LLAMA = str(PARITY / "llama")
COMPUTING = [t for t in TOOLS if "prompt" in t.inputs.model_fields]
HUGE = "The capital of France is Paris. " * 9375  # 300,000 characters
OVER_CONTEXT = "one two three four five six seven " * 120  # ~840 tokens > 512


def example(spec: ToolSpec, **changes: Any) -> dict[str, Any]:
    args = {**spec.example, **changes}
    return {k: LLAMA if k in ("model", "model_b") and v == "demo" else v for k, v in args.items()}


def hostile(spec: ToolSpec) -> list[tuple[dict[str, Any], str]]:
    cases = [
        (example(spec, prompt=HUGE), "300,000 characters"),
        (example(spec, prompt=OVER_CONTEXT), "context is 512"),
        (example(spec, layers=["0"]), "layers"),
        (example(spec, raw={"a": 1}), "raw"),
    ]
    if spec.name == "analyze":
        batch = example(spec, positions="all", layer_strategy="all", top_k=100)
        del batch["prompt"]
        batch["prompts"] = ["the cat sat on the mat and " * 12] * 64
        batch["track_tokens"] = [f" w{n}" for n in range(32)]
        cases.append((batch, "response limit of 32 MiB"))
    return cases


async def run_cases(client: ClientSession | Client, spec: ToolSpec) -> None:
    with anyio.fail_after(120):
        good = await client.call_tool(spec.name, example(spec))
    assert not good.is_error, good.content
    for args, expected in hostile(spec):
        began = time.monotonic()
        with anyio.fail_after(60):
            reply = await client.call_tool(spec.name, args)
        assert reply.is_error, (spec.name, expected)
        [block] = reply.content
        text = block.text  # type: ignore[union-attr]
        assert "\n" not in text and "internal error" not in text and len(text) < 600, text
        assert expected in text, (expected, text)
        assert time.monotonic() - began < 30
        with anyio.fail_after(60):
            again = await client.call_tool(spec.name, example(spec))
        assert not again.is_error, again.content
        assert again.structured_content == good.structured_content or spec.name == "model_info"


@asynccontextmanager
async def spawned(*args: str) -> AsyncIterator[ClientSession]:
    # The whole environment: the SDK's default passes only HOME and PATH, so a PYTHONPATH
    # naming the code under test would be lost and the installed copy would answer.
    params = StdioServerParameters(
        command=console_script("lazarus-mcp"), args=list(args), env=dict(os.environ)
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(60):
            await session.initialize()
        yield session


@pytest.mark.parametrize("spec", COMPUTING, ids=lambda t: t.name)
async def test_every_tool_over_stdio(spec: ToolSpec) -> None:
    async with spawned("--log-level", "WARNING") as session:
        await run_cases(session, spec)


async def test_every_tool_over_http() -> None:
    with http_server() as url:
        async with Client(url) as client:
            for spec in COMPUTING:
                await run_cases(client, spec)


async def test_the_servers_limit_flags_are_the_clis() -> None:
    """``lazarus-mcp`` takes the ``--max-*`` flags of the one limits table (runtime/limits.py
    LIMIT_FLAGS), as every ``lazarus`` command does: the default refuses top_k 150, the raised
    limit is honoured, and a lowered one refuses what the default allows."""
    analyze = next(t for t in TOOLS if t.name == "analyze")
    wide = example(analyze, top_k=150)
    async with spawned("--log-level", "WARNING") as session:
        with anyio.fail_after(120):
            refused = await session.call_tool("analyze", wide)
    assert refused.is_error
    assert "top_k must be an integer from 1 to 100 (--max-top-k)" in refused.content[0].text  # type: ignore[union-attr]
    flags = ("--max-top-k", "150", "--max-prompt-chars", "30", "--log-level", "WARNING")
    async with spawned(*flags) as session:
        with anyio.fail_after(120):
            done = await session.call_tool("analyze", wide)
            long = await session.call_tool("analyze", example(analyze, prompt="x" * 31))
    assert not done.is_error, done.content
    rows = done.structured_content["layer_predictions"]  # type: ignore[index]
    assert {len(row["top_k"]) for row in rows} == {150}
    assert long.is_error
    text = long.content[0].text  # type: ignore[union-attr]
    assert "31 characters, more than this server's limit of 30" in text, text


SLOW_TEMPLATE = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{{ messages[0]['content'] }}"
)


def slow_model(tmp_path: Path) -> str:
    """A checkpoint whose chat template runs for hours: a call that applies it runs past any
    deadline; the same model raw is quick."""
    path = build_checkpoint(tmp_path / "slow", chat_template=True)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["chat_template"] = SLOW_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(path)


async def run_deadline(client: ClientSession | Client, spec: ToolSpec, model: str) -> None:
    """Past the deadline (1 s): a one-line timeout within 2x the limit (plus a load), and the
    next good call on the same server is answered, not charged for the overrun."""
    slow = {**example(spec), "model": model, "raw": False}
    if "model_b" in slow:
        slow["model_b"] = model
    with anyio.fail_after(90):  # the server preloads it; a cold load takes longer than 1 s
        while (await client.call_tool("model_info", {"model": model})).is_error:
            await anyio.sleep(0.5)
    for _ in range(2):
        began = time.monotonic()
        with anyio.fail_after(30):
            reply = await client.call_tool(spec.name, slow)
        took = time.monotonic() - began
        assert reply.is_error
        text = reply.content[0].text  # type: ignore[union-attr]
        assert "time limit of 1 s" in text and "\n" not in text, text
        assert took < 2 * 1 + 1.5, f"{spec.name}: the timeout came after {took:.1f} s"
        with anyio.fail_after(30):
            good = await client.call_tool(spec.name, {**slow, "raw": True})
        assert not good.is_error, good.content


@pytest.mark.parametrize("spec", COMPUTING, ids=lambda t: t.name)
async def test_every_tool_past_its_deadline_over_stdio(spec: ToolSpec, tmp_path: Path) -> None:
    model = slow_model(tmp_path)
    args = ("--log-level", "WARNING", "--call-timeout", "1", "--preload", model)
    async with spawned(*args) as session:
        await run_deadline(session, spec, model)


async def test_every_tool_past_its_deadline_over_http(tmp_path: Path) -> None:
    model = slow_model(tmp_path)
    with http_server("--call-timeout", "1", "--preload", model) as url:
        async with Client(url) as client:
            for spec in COMPUTING:
                await run_deadline(client, spec, model)


@pytest.mark.parametrize("spec", COMPUTING, ids=lambda t: t.name)
def test_every_command_past_its_deadline_exits_2_and_writes_nothing(
    spec: ToolSpec, tmp_path: Path
) -> None:
    from lazarus_cli.commands import cli_of

    model = slow_model(tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    argv = [console_script("lazarus"), "introspect", str(spec.command_name)]
    for name, value in {**example(spec), "model": model, "raw": False}.items():
        cli = cli_of(spec.inputs.model_fields[name])
        flag = "-p" if name == "prompt" else (cli.flags or ("--" + name.replace("_", "-"),))[0]
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            for item in value if isinstance(value, list) else [value]:
                argv += [flag, str(item)]
    argv += ["--call-timeout", "1", "-o", str(out / "result.json")]
    began = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: the call ran past its time limit of 1 s"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert list(out.iterdir()) == []
    assert time.monotonic() - began < 60
