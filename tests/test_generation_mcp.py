"""The ``generate`` tool in memory (``mcp.Client(server)``) on the parity llama: the same
result as the API, progress per token, cancellation within one step, the deadline, and hostile
calls refused up front."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from lazarus_mcp.runtime import generation as generation_module
from lazarus_mcp.runtime import limits
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult
from lazarus_mcp.server.app import create_server
from tests.conftest import PARITY

pytestmark = pytest.mark.anyio

LLAMA = str(PARITY / "llama")
GOOD = {"model": LLAMA, "prompt": "The capital of France is", "raw": True, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache(max_models=1)


@pytest.fixture
async def client(cache: ModelCache) -> AsyncIterator[Client]:
    async with Client(create_server(cache)) as session:
        yield session


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_line(result: CallToolResult) -> str:
    assert result.is_error and result.structured_content is None
    [block] = result.content
    assert "\n" not in block.text and "Traceback" not in block.text
    assert "internal error" not in block.text, block.text
    return block.text


async def test_the_tool_gives_the_api_result_and_a_progress_note_per_token(
    client: Client, cache: ModelCache
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    args = {**GOOD, "track_tokens": [" Paris"], "max_new_tokens": 8}
    with anyio.fail_after(120):
        result = await client.call_tool("generate", args, progress_callback=on_progress)
    data = ok(result)
    parsed = GenerationResult.model_validate(data)
    assert result.content[0].text.startswith(f"{LLAMA} (llama, 6 layers")
    assert "Timeline:" in result.content[0].text
    tokens = [m for _, _, m in seen if m and m.startswith("token ")]
    assert len(tokens) == len(parsed.steps)
    progress = [p for p, _, _ in seen]
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    analyzer = ModelAnalyzer(cache.peek(LLAMA))  # type: ignore[arg-type]
    config = GenerationConfig(max_new_tokens=8, track_tokens=[" Paris"], use_chat_template=False)
    api = await analyzer.generate(GOOD["prompt"], config)
    assert api.model_dump(mode="json") == data


async def test_sampled_calls_with_a_seed_repeat(client: Client) -> None:
    args = {**GOOD, "temperature": 1.0, "top_p": 0.9, "seed": 3, "max_new_tokens": 10}
    with anyio.fail_after(120):
        first = ok(await client.call_tool("generate", args))
        second = ok(await client.call_tool("generate", args))
    assert first["generated_token_ids"] == second["generated_token_ids"]
    assert first["seed"] == 3 and first["config"]["temperature"] == 1.0


async def test_a_cancelled_generation_stops_within_a_step_and_the_next_call_is_answered(
    client: Client,
) -> None:
    with anyio.fail_after(120):
        ok(await client.call_tool("generate", GOOD))  # loaded
    ran: list[int] = []
    original = generation_module._advance

    def counting(run: Any) -> Any:
        ran.append(len(run.steps))
        return original(run)

    three = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("token 3:"):
            three.set()

    generation_module._advance = counting
    try:
        long = {**GOOD, "max_new_tokens": 400, "layer_strategy": "all"}
        async with anyio.create_task_group() as tg:

            async def doomed() -> None:
                await client.call_tool("generate", long, progress_callback=on_progress)

            tg.start_soon(doomed)
            with anyio.fail_after(60):
                await three.wait()
            tg.cancel_scope.cancel()
        stopped_at = len(ran)
        with anyio.fail_after(10):  # at once: the worker is free within a step
            ok(await client.call_tool("generate", GOOD))
    finally:
        generation_module._advance = original
    assert stopped_at < 10, "the cancelled run stopped within a step of the cancellation"


async def test_the_deadline_ends_the_generation_with_what_was_written(client: Client) -> None:
    with anyio.fail_after(120):
        ok(await client.call_tool("generate", GOOD))  # loads the model
    # The limit is sized from this machine's own step time (a warm 6-token call, its prefill
    # included, overstates a step), so that the 500 tokens asked for cannot all fit in it.
    started = time.perf_counter()
    ok(await client.call_tool("generate", {**GOOD, "layer_strategy": "all"}))
    per_step = (time.perf_counter() - started) / GOOD["max_new_tokens"]
    timeout = min(2.0, max(0.5, 40 * per_step))
    before = limits.current()
    limits.configure(replace(before, call_timeout=timeout))
    try:
        with anyio.fail_after(30):
            slow = {**GOOD, "max_new_tokens": 500, "layer_strategy": "all"}
            data = ok(await client.call_tool("generate", slow))
    finally:
        limits.configure(before)
    if data["stop_reason"] == "eos":
        pytest.skip("the model ended its text before the deadline")
    assert data["stop_reason"] == "deadline", f"500 tokens within {timeout:.2f} s"
    assert 0 < len(data["steps"]) < 500


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"max_new_tokens": 10**9}, "max_new_tokens"),
        ({"stop": ["x" * 1_000_000]}, "stop"),
        ({"stop": ["x"] * 1000}, "stop"),
        ({"top_k": 49152, "layer_strategy": "all"}, "top_k"),
        ({"max_new_tokens": 4096, "layer_strategy": "all", "top_k": 100}, "tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -5}, "seed"),
    ],
    ids=["huge-n", "huge-stop", "many-stops", "vocab-top-k", "n-past-context", "t", "p", "seed"],
)
async def test_hostile_generations_are_refused_up_front(
    client: Client, args: dict[str, Any], expected: str
) -> None:
    with anyio.fail_after(30):
        message = error_line(await client.call_tool("generate", {**GOOD, **args}))
    assert expected in message, message
    assert len(message) < 600
    with anyio.fail_after(60):
        ok(await client.call_tool("generate", GOOD))


async def test_the_heatmap_comes_as_an_image(client: Client) -> None:
    with anyio.fail_after(120):
        result = await client.call_tool("generate", {**GOOD, "plot": True})
    ok(result)
    assert [block.type for block in result.content] == ["text", "image"]
    assert result.content[1].mime_type == "image/png"
