"""The gate over the wire, for EVERY tool of the registry: the installed ``lazarus-mcp`` over
stdio (one server per tool) and over streamable HTTP (one server for all tools).

The in-process interfaces (API, MCP in memory, the CLI) run the full hostile matrix in
``test_gate.py``; here each tool's hostile calls cross the real JSON-RPC transport: a
300,000-character prompt, a prompt past the model's context, wrong types, and for ``analyze`` a
batch grid whose result would be hundreds of MB. Each ends in a one-line error result within
seconds, and the same server answers the tool's good call right after.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from lazarus_mcp.tools import TOOLS
from lazarus_mcp.tools.spec import ToolSpec
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
