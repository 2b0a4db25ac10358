"""Hostile inputs and hostile checkpoints, one test per row of issue 10's table (and a few more).

Each must end in a clear one-line error within seconds, with the server alive and a good call
answered right after. In-memory client (``mcp.Client(server)``) on real tiny checkpoints; the
process-level rows (signals, stdin, broken pipes, raw JSON-RPC) are in ``test_faults.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from lazarus_mcp.runtime import analyzer as analyzer_module
from lazarus_mcp.runtime import limits, worker
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.app import create_server
from tests.checkpoints import build_checkpoint
from tests.conftest import PARITY

pytestmark = pytest.mark.anyio

LLAMA = str(PARITY / "llama")
GEMMA2 = str(PARITY / "gemma2")
GOOD = {"model": LLAMA, "prompt": "The capital of France is", "raw": True}


@pytest.fixture
def tight_limits() -> Iterator[limits.Limits]:
    """Short timeouts so that the rows about hangs take seconds, restored afterwards."""
    before = limits.current()
    tight = replace(before, template_timeout=2.0, call_timeout=30.0)
    limits.configure(tight)
    yield tight
    limits.configure(before)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache(max_models=2)


@pytest.fixture
async def client(cache: ModelCache) -> AsyncIterator[Client]:
    async with Client(create_server(cache)) as session:
        yield session


def error_line(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    assert result.structured_content is None
    [block] = result.content
    assert "\n" not in block.text and "Traceback" not in block.text
    assert "internal error" not in block.text, block.text
    assert len(block.text) < 600, "messages never echo unbounded input back"
    return block.text


async def refused(client: Client, tool: str, args: dict[str, Any], *expected: str) -> str:
    """The call fails with a one-line message containing ``expected``, within seconds, and a
    good call is answered right after."""
    with anyio.fail_after(30):
        message = error_line(await client.call_tool(tool, args))
    for part in expected:
        assert part in message, (part, message)
    with anyio.fail_after(60):
        good = await client.call_tool("analyze", GOOD)
    assert not good.is_error, good.content
    return message


def hostile_copy(tmp_path: Path, name: str = "llama") -> Path:
    return Path(shutil.copytree(PARITY / name, tmp_path / f"hostile-{name}"))


def edit_config(path: Path, **changes: Any) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del config[key]
    (path / "config.json").write_text(json.dumps(config))


# Prompts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [LLAMA, GEMMA2])
@pytest.mark.parametrize("raw", [True, False])
async def test_a_300000_character_prompt_is_refused_before_tokenizing(
    client: Client, model: str, raw: bool
) -> None:
    prompt = "The capital of France is Paris. " * 9375
    assert len(prompt) == 300_000
    for tool, extra in [("analyze", {}), ("track_tokens", {"tokens": [" Paris"]})]:
        args = {"model": model, "prompt": prompt, "raw": raw, **extra}
        await refused(client, tool, args, "300,000 characters", "100,000", "max_prompt_chars")


async def test_a_long_prompt_is_refused_by_tokens_with_both_numbers(client: Client) -> None:
    prompt = "one two three four five six seven " * 900  # 30,600 characters
    message = await refused(client, "analyze", {**GOOD, "prompt": prompt}, "tokens")
    assert "context is 512 (max_position_embeddings)" in message
    assert "limit is 4,096 (--max-prompt-tokens)" in message
    before = limits.current()
    limits.configure(replace(before, max_prompt_tokens=64))
    try:
        message = await refused(client, "analyze", {**GOOD, "prompt": "one two " * 20}, "tokens")
        assert "limit is 64 (--max-prompt-tokens)" in message
    finally:
        limits.configure(before)


# Checkpoints ---------------------------------------------------------------------------------


async def test_a_config_claiming_100000_blocks_is_refused_before_mlx_builds_it(
    client: Client, tmp_path: Path
) -> None:
    path = hostile_copy(tmp_path)
    edit_config(path, num_hidden_layers=100_000)
    await refused(client, "model_info", {"model": str(path)}, "100000 layers", "weights hold 6")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"num_hidden_layers": None}, "has no num_hidden_layers"),
        ({"num_hidden_layers": "six"}, "invalid num_hidden_layers"),
        ({"num_hidden_layers": True}, "invalid num_hidden_layers"),
        ({"hidden_size": 4096}, "hidden_size 4096"),
        ({"vocab_size": 10**9}, "vocab_size"),
        ({"intermediate_size": -1}, "invalid intermediate_size"),
    ],
)
async def test_configs_that_disagree_with_their_weights_are_refused(
    client: Client, tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    path = hostile_copy(tmp_path)
    edit_config(path, **changes)
    await refused(client, "model_info", {"model": str(path)}, expected)


async def test_a_config_nested_100000_deep_is_refused(client: Client, tmp_path: Path) -> None:
    path = hostile_copy(tmp_path)
    (path / "config.json").write_text(
        '{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    await refused(client, "model_info", {"model": str(path)}, "nested more than")


async def test_a_5000_character_model_name_is_refused(client: Client) -> None:
    await refused(client, "analyze", {**GOOD, "model": "a" * 5000}, "5,000 characters")
    await refused(client, "analyze", {**GOOD, "model": "/tmp/" + "x" * 300}, "not")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "outside"])
async def test_tokenizer_files_that_are_not_plain_files_inside_are_refused(
    client: Client, tmp_path: Path, target: str
) -> None:
    path = hostile_copy(tmp_path)
    tokenizer = path / "tokenizer.json"
    tokenizer.unlink()
    if target == "/dev/zero":
        tokenizer.symlink_to("/dev/zero")
        expected = "points outside"
    elif target == "fifo":
        os.mkfifo(tokenizer)
        expected = "not a regular file"
    else:
        (tmp_path / "elsewhere.json").write_text("{}")
        tokenizer.symlink_to(tmp_path / "elsewhere.json")
        expected = "points outside"
    await refused(client, "model_info", {"model": str(path)}, "tokenizer.json", expected)


async def test_a_fifo_linked_from_inside_the_checkpoint_is_refused(
    client: Client, tmp_path: Path
) -> None:
    path = hostile_copy(tmp_path)
    os.mkfifo(path / "pipe")
    (path / "tokenizer.json").unlink()
    (path / "tokenizer.json").symlink_to(path / "pipe")
    await refused(client, "model_info", {"model": str(path)}, "not a regular file")


async def test_oversized_and_lying_weights_are_refused(client: Client, tmp_path: Path) -> None:
    path = hostile_copy(tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10**6, 10**6]
    encoded = json.dumps(header).encode()
    weights.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + length :])
    await refused(client, "model_info", {"model": str(path)}, "header lies")


async def test_a_model_larger_than_the_memory_budget_is_refused_before_loading(
    client: Client,
) -> None:
    before = limits.current()
    limits.configure(replace(before, memory_budget=2**16))
    try:
        message = await refused_without_good_call(client, {"model": str(PARITY / "mistral")})
    finally:
        limits.configure(before)
    assert "memory budget" in message and "--memory-budget" in message


async def refused_without_good_call(client: Client, args: dict[str, Any]) -> str:
    with anyio.fail_after(30):
        return error_line(await client.call_tool("model_info", args))


async def test_a_forward_pass_larger_than_the_budget_is_refused(client: Client) -> None:
    with anyio.fail_after(60):
        assert not (await client.call_tool("model_info", {"model": LLAMA})).is_error
    before = limits.current()
    limits.configure(replace(before, memory_budget=4 * 2**20))
    try:
        prompt = "one two three " * 30
        with anyio.fail_after(30):
            message = error_line(await client.call_tool("analyze", {**GOOD, "prompt": prompt}))
    finally:
        limits.configure(before)
    assert "this forward pass needs about" in message


async def test_remote_code_is_refused_with_advice_the_caller_can_follow(
    client: Client, tmp_path: Path
) -> None:
    path = hostile_copy(tmp_path)
    edit_config(path, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (path / "modeling_evil.py").write_text("raise SystemExit('ran remote code')\n")
    message = await refused(client, "model_info", {"model": str(path)}, "never executes")
    assert "trust_remote_code" not in message


# Chat templates ------------------------------------------------------------------------------


def with_template(tmp_path: Path, template: str) -> Path:
    path = build_checkpoint(tmp_path / "templated", chat_template=True)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    return path


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'a' * 3000000000 }}", "memory"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
            "longer than",
        ),
        ("{{ 'ab' * 900000 }}", "more than 1,000,000 characters"),
        ("{{ raise_exception('no') }}", "failed (no)"),
    ],
)
async def test_hostile_chat_templates_end_in_an_error_suggesting_raw(
    client: Client, tmp_path: Path, tight_limits: limits.Limits, template: str, expected: str
) -> None:
    path = str(with_template(tmp_path, template))
    args = {"model": path, "prompt": "Hello", "raw": False}
    message = await refused(client, "analyze", args, expected, "raw")
    # The same model, raw, works: the message's advice is one the caller can follow.
    assert not (await client.call_tool("analyze", {**args, "raw": True})).is_error
    assert message


async def test_a_chat_template_renders_as_transformers_renders_it(client: Client) -> None:
    from transformers import AutoTokenizer

    from lazarus_mcp.modeling.chat_template import render_chat

    tokenizer = AutoTokenizer.from_pretrained(LLAMA)
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi ✓"}], add_generation_prompt=True, tokenize=False
    )
    assert worker.run_sync(render_chat, tokenizer, "Hi ✓") == expected


# Numbers and sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e308, "inf", "Infinity", 1e5])
async def test_extreme_embedding_scales_are_refused(client: Client, scale: Any) -> None:
    args = {**GOOD, "model": str(PARITY / "gemma"), "embedding_scale": scale}
    await refused(client, "analyze", args, "embedding_scale")


async def test_non_finite_results_are_errors_not_invalid_results() -> None:
    import numpy as np

    from lazarus_mcp.analyses.finite import check_finite
    from lazarus_mcp.errors import InvalidRequestError

    check_finite(np.array([0.5, 0.25]))
    with pytest.raises(InvalidRequestError, match="non-finite"):
        check_finite(np.array([0.5, np.nan]))


async def test_huge_tracked_tokens_are_refused_before_work(client: Client) -> None:
    tokens = ["x" * 100_000] * 32
    await refused(client, "track_tokens", {**GOOD, "tokens": tokens}, "100,000 characters")
    await refused(client, "analyze", {**GOOD, "track_tokens": ["y" * 300]}, "300 characters")


async def test_huge_layer_lists_are_refused(client: Client) -> None:
    await refused(client, "analyze", {**GOOD, "layers": [0] * 10_000}, "10,000 layers")


# The worker: deadline and cancellation --------------------------------------------------------


async def test_a_call_past_its_deadline_ends_and_frees_the_worker(client: Client) -> None:
    with anyio.fail_after(60):
        assert not (await client.call_tool("model_info", {"model": LLAMA})).is_error
    ran: list[str] = []
    original = analyzer_module._analyze

    def counting(*args: Any) -> Any:
        ran.append("analyze")
        return original(*args)

    before = limits.current()
    gate = threading.Event()
    blocker = worker.submit(gate.wait, 30)
    limits.configure(replace(before, call_timeout=0.5))
    analyzer_module._analyze = counting
    try:
        with anyio.fail_after(10):
            message = error_line(await client.call_tool("analyze", GOOD))
    finally:
        limits.configure(before)
        gate.set()
        analyzer_module._analyze = original
    assert "time limit of 0.5 s" in message and "--call-timeout" in message
    assert blocker.result(timeout=10) is True
    with anyio.fail_after(60):
        assert not (await client.call_tool("analyze", GOOD)).is_error
    # The timed-out job never ran: it was dropped from the queue.
    assert ran == []


async def test_a_cancelled_call_stops_its_work(client: Client) -> None:
    with anyio.fail_after(60):
        assert not (await client.call_tool("model_info", {"model": LLAMA})).is_error
    ran: list[str] = []
    original = analyzer_module._analyze

    def counting(*args: Any) -> Any:
        ran.append("analyze")
        return original(*args)

    gate = threading.Event()
    blocker = worker.submit(gate.wait, 30)
    analyzer_module._analyze = counting
    try:
        for _ in range(5):
            with anyio.move_on_after(0.3):
                await client.call_tool("analyze", GOOD)
        gate.set()
        assert blocker.result(timeout=10) is True
        with anyio.fail_after(60):
            assert not (await client.call_tool("analyze", GOOD)).is_error
    finally:
        gate.set()
        analyzer_module._analyze = original
    assert ran == ["analyze"], "only the good call ran; the five cancelled ones never started"


def test_the_forward_pass_checks_the_deadline_between_blocks() -> None:
    from lazarus_mcp.lens.taps import forward_with_taps
    from lazarus_mcp.modeling.loading import load

    class StopAfter(limits.Interrupt):
        def __init__(self, blocks: int) -> None:
            super().__init__()
            self.left = blocks
            self.checked = 0

        def check(self) -> None:
            self.checked += 1
            if self.checked > self.left:
                raise limits.CallInterrupted("stopped")

    def run() -> tuple[int, bool]:
        loaded = load(LLAMA)
        blocks = loaded.model.model.layers
        stop = StopAfter(2)
        limits.set_interrupt(stop)
        try:
            with pytest.raises(limits.CallInterrupted):
                forward_with_taps(loaded.model, [0, 5, 6, 7], [0, 3, 5])
        finally:
            limits.set_interrupt(None)
        restored = all(type(b).__name__ == "TransformerBlock" for b in blocks)
        return stop.checked, restored

    checked, restored = worker.run_sync(run)
    assert checked == 3  # after block 0, block 1, and the stop after block 2
    assert restored, "the blocks are unwrapped after an interrupted pass"


class ExpiresInForward(limits.Interrupt):
    """A real deadline that passes at the forward's ``checks``-th check between blocks (the
    worker and the gate check too, before the forward, and a batch's groups are jobs of one
    call); records where it stopped the job."""

    def __init__(self, checks: int) -> None:
        super().__init__(deadline=time.monotonic() + 600, timeout=0.01)
        self.checks = checks
        self.checked = 0
        self.stopped_in: list[str] = []

    def check(self) -> None:
        if sys._getframe(1).f_code.co_name == "_between_blocks":
            self.checked += 1
        if self.checked == self.checks and not self.stopped_in:
            self.deadline = time.monotonic() - 1
            self.stopped_in.append(sys._getframe(1).f_code.co_name)
        super().check()


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("analyze", {**GOOD, "positions": "all", "include_embeddings": True}),
        ("analyze", {"model": LLAMA, "prompts": ["The capital of France is", "Hi"], "raw": True}),
        ("attribute", GOOD),
        ("compare", {**GOOD, "prompt_b": "Hello world"}),
        ("generate", {**GOOD, "max_new_tokens": 4}),
    ],
    ids=["grid", "batch", "attribute", "compare", "generate"],
)
async def test_every_forward_stops_between_blocks_past_its_deadline(
    client: Client, cache: ModelCache, tool: str, args: dict[str, Any]
) -> None:
    with anyio.fail_after(60):
        assert not (await client.call_tool("model_info", {"model": LLAMA})).is_error
    jobs: list[ExpiresInForward] = []
    original = analyzer_module._deadline

    def expiring() -> limits.Interrupt:
        jobs.append(ExpiresInForward(checks=2))  # after block 0, then block 1
        return jobs[-1]

    analyzer_module._deadline = expiring
    try:
        with anyio.fail_after(30):
            message = error_line(await client.call_tool(tool, args))
    finally:
        analyzer_module._deadline = original
    assert "time limit of 0.01 s" in message and "--call-timeout" in message
    assert [where for job in jobs for where in job.stopped_in] == ["_between_blocks"]
    loaded = cache.peek(LLAMA)
    assert loaded is not None
    blocks = [type(b).__name__ for b in loaded.model.model.layers]
    assert blocks == ["TransformerBlock"] * 6, "the blocks are unwrapped after a stopped pass"
    with anyio.fail_after(60):
        again = await client.call_tool(tool, args)
    assert not again.is_error, again.content


async def test_the_queued_call_cap_answers_busy(client: Client) -> None:
    with anyio.fail_after(60):
        assert not (await client.call_tool("model_info", {"model": LLAMA})).is_error
    before = limits.current()
    gate = threading.Event()
    blocker = worker.submit(gate.wait, 30)
    limits.configure(replace(before, max_queued_calls=2))
    results: list[CallToolResult] = []
    try:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await client.call_tool("analyze", GOOD))

            for _ in range(2):
                tg.start_soon(call)
            await anyio.sleep(0.5)
            with anyio.fail_after(5):
                busy = error_line(await client.call_tool("analyze", GOOD))
                cheap = await client.call_tool("loaded_models", {})
            gate.set()
    finally:
        gate.set()
        limits.configure(before)
    assert blocker.result(timeout=10) is True
    assert "busy" in busy and "--max-queued-calls" in busy
    assert not cheap.is_error
    assert len(results) == 2 and not any(r.is_error for r in results)


# Model access --------------------------------------------------------------------------------


async def test_allow_model_restricts_what_can_be_loaded(client: Client, tmp_path: Path) -> None:
    before = limits.current()
    limits.configure(replace(before, allowed_models=(str(PARITY / "ll*"),)))
    try:
        message = await refused_without_good_call(client, {"model": str(PARITY / "qwen3")})
        assert "not allowed" in message
        message = await refused_without_good_call(client, {"model": "some-org/some-model"})
        assert "not allowed" in message
        with anyio.fail_after(60):
            assert not (await client.call_tool("analyze", GOOD)).is_error
    finally:
        limits.configure(before)
