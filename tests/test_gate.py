"""The request gate and the call deadline, for EVERY tool of the registry and every interface.

The tools come from ``lazarus_mcp.tools.TOOLS`` and each one's own ``example`` arguments, so a
tool added later is covered here without anyone remembering. Interfaces: the Python API
(``introspection.call_tool``), MCP in memory (the SDK's client on the server), the ``lazarus``
command (in process), and MCP over stdio (the installed ``lazarus-mcp``). Each hostile case ends
in one line naming the figure and the limit, within seconds, before any forward pass; and a good
call right after is answered, with the same JSON as before the hostile one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import ValidationError
from typer.testing import CliRunner

from lazarus_cli.commands import cli_of
from lazarus_cli.main import app
from lazarus_mcp.errors import LazarusError
from lazarus_mcp.introspection import call_tool
from lazarus_mcp.runtime import analyzer as analyzer_module
from lazarus_mcp.runtime import gate, limits, worker
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.app import create_server, validation_message
from lazarus_mcp.tools import TOOLS
from lazarus_mcp.tools.spec import ToolSpec
from tests.conftest import PARITY

LLAMA = str(PARITY / "llama")  # max_position_embeddings 512
CACHE = ModelCache(max_models=2)
COMPUTING = [t for t in TOOLS if "prompt" in t.inputs.model_fields]
INTERFACES = ["api", "mcp", "cli"]
HUGE = "The capital of France is Paris. " * 9375  # 300,000 characters
OVER_CONTEXT = "one two three four five six seven " * 120  # ~840 tokens, 4,080 characters


def example(spec: ToolSpec, **changes: Any) -> dict[str, Any]:
    args = {**spec.example, **changes}
    for key in ("model", "model_b"):
        if args.get(key) == "demo":
            args[key] = LLAMA
    return args


@pytest.fixture(autouse=True)
def restore_limits() -> Iterator[None]:
    before = limits.current()
    yield
    limits.configure(before)


@dataclass
class Outcome:
    error: str | None
    data: dict[str, Any] | None
    seconds: float


def cli_argv(spec: ToolSpec, args: dict[str, Any]) -> list[str]:
    """The command line for ``args``, spelled by the fields' own CLI metadata."""
    assert spec.command_name is not None
    argv = ["introspect", spec.command_name]
    for name, value in args.items():
        cli = cli_of(spec.inputs.model_fields[name])
        flag = (cli.flags or ("--" + name.replace("_", "-"),))[0]
        if cli.hidden and name in ("prompt", "prompts"):
            flag = "-p"  # analyze's repeatable prompt
        elif cli.hidden:
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif values and all(type(v) is int for v in values):
            argv += [flag, ",".join(str(v) for v in values)]
        else:
            for item in values:
                argv += [flag, str(item)]
    return argv


def call(interface: str, spec: ToolSpec, args: dict[str, Any]) -> Outcome:
    began = time.monotonic()
    if interface == "cli":
        result = CliRunner().invoke(app, [*cli_argv(spec, args), "--json"])
        took = time.monotonic() - began
        if result.exit_code == 0:
            return Outcome(None, json.loads(result.stdout), took)
        assert result.exit_code == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        return Outcome(lines[0].removeprefix("error: "), None, took)
    outcome = anyio.run(_call_async, interface, spec, args)
    outcome.seconds = time.monotonic() - began
    return outcome


async def _call_async(interface: str, spec: ToolSpec, args: dict[str, Any]) -> Outcome:
    if interface == "api":
        try:
            result = await call_tool(spec.name, args, cache=CACHE)
        except LazarusError as exc:
            return Outcome(str(exc), None, 0)
        except ValidationError as exc:
            return Outcome(validation_message(exc), None, 0)
        return Outcome(None, result.model_dump(mode="json"), 0)
    async with Client(create_server(CACHE)) as client:
        reply = await client.call_tool(spec.name, args)
    if reply.is_error:
        assert reply.structured_content is None
        [block] = reply.content
        return Outcome(block.text, None, 0)
    return Outcome(None, reply.structured_content, 0)


def refused(interface: str, spec: ToolSpec, args: dict[str, Any], *expected: str) -> str:
    outcome = call(interface, spec, args)
    assert outcome.error is not None, f"{spec.name} via {interface} answered"
    message = outcome.error
    assert "\n" not in message and "Traceback" not in message and "internal error" not in message
    assert len(message) < 600, "messages never echo unbounded input back"
    for part in expected:
        assert part in message, (part, message)
    assert outcome.seconds < 60, f"{spec.name} via {interface} took {outcome.seconds:.1f} s"
    return message


_GOOD: dict[str, dict[str, Any]] = {}


def answered_right(interface: str, spec: ToolSpec) -> None:
    """A good call answers, with the same JSON as the first good call of this tool."""
    outcome = call(interface, spec, example(spec))
    assert outcome.error is None, outcome.error
    assert outcome.data is not None
    if spec.name == "model_info":
        outcome.data.pop("already_loaded")
    first = _GOOD.setdefault(spec.name, outcome.data)
    assert outcome.data == first


parametrize_tools = pytest.mark.parametrize("spec", COMPUTING, ids=lambda t: t.name)
parametrize_interfaces = pytest.mark.parametrize("interface", INTERFACES)


@parametrize_interfaces
@parametrize_tools
def test_a_300000_character_prompt_is_refused_before_any_work(
    interface: str, spec: ToolSpec
) -> None:
    answered_right(interface, spec)
    refused(interface, spec, example(spec, prompt=HUGE), "300,000 characters", "100,000")
    answered_right(interface, spec)


@parametrize_interfaces
@parametrize_tools
def test_a_prompt_beyond_the_models_context_is_refused(interface: str, spec: ToolSpec) -> None:
    refused(interface, spec, example(spec, prompt=OVER_CONTEXT), "context is 512", "tokens")
    answered_right(interface, spec)


@parametrize_interfaces
@parametrize_tools
def test_a_result_beyond_the_response_budget_is_refused_up_front(
    interface: str, spec: ToolSpec
) -> None:
    limits.configure(replace(limits.current(), max_result_bytes=2048))
    ran: list[str] = []
    original = analyzer_module._admitted

    def recording(models: Any, request: Any, fn: Any, args: Any) -> Any:
        gate.admit(models, request)
        ran.append(fn.__name__)  # past the gate: the work would start here
        return fn(*args)

    analyzer_module._admitted = recording
    try:
        refused(interface, spec, example(spec), "MiB of JSON", "--max-result-mb")
    finally:
        analyzer_module._admitted = original
    assert ran == [], "refused before any work"
    limits.configure(replace(limits.current(), max_result_bytes=32 * 2**20))
    answered_right(interface, spec)


@parametrize_interfaces
@parametrize_tools
def test_past_the_deadline_the_call_stops_and_the_next_is_answered(
    interface: str, spec: ToolSpec, tmp_path: Any
) -> None:
    before = limits.current()
    limits.configure(replace(before, call_timeout=1e-6))
    args = example(spec)
    if interface == "cli":
        out = tmp_path / "out.json"
        result = CliRunner().invoke(app, [*cli_argv(spec, args), "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert "time limit" in result.stderr and len(result.stderr.splitlines()) == 1
        assert list(tmp_path.iterdir()) == [], "a command past its deadline writes no file"
    else:
        refused(interface, spec, args, "time limit", "--call-timeout")
    limits.configure(before)
    answered_right(interface, spec)


@pytest.mark.parametrize("interface", ["api", "mcp"])
@parametrize_tools
def test_a_call_is_never_charged_for_the_previous_ones_overrun(
    interface: str, spec: ToolSpec
) -> None:
    """A job that overran holds the worker for 1.5 s; a call with a 1 s limit queued behind it
    is answered: its clock starts when its own job does."""
    answered_right(interface, spec)
    limits.configure(replace(limits.current(), call_timeout=1.0))
    release = threading.Event()
    blocker = worker.submit(release.wait, 1.5)
    try:
        answered_right(interface, spec)
    finally:
        release.set()
    blocker.result(timeout=10)


BAD_VALUES: list[Any] = [{"not": ["a", "value"]}, ["0"], [True], 1e300, "x" * 5000]


@pytest.mark.parametrize("interface", ["api", "mcp"])
@pytest.mark.parametrize("spec", [t for t in TOOLS if t.example], ids=lambda t: t.name)
def test_every_argument_of_a_wrong_type_is_one_line(interface: str, spec: ToolSpec) -> None:
    """Every field of the tool's input, given values of the wrong shape: an error or a bounded
    answer, never a coerced integer (``"0"`` and ``true`` are not positions or layers)."""
    for name in spec.inputs.model_fields:
        for value in BAD_VALUES:
            if isinstance(spec.example.get(name), str) and isinstance(value, str):
                continue  # a long text where a text goes is the other tests' business
            outcome = call(interface, spec, example(spec, **{name: value}))
            if outcome.error is None:
                assert value not in (["0"], [True]) or name not in ("layers", "positions")
                continue
            assert "\n" not in outcome.error and "internal error" not in outcome.error
            assert len(outcome.error) < 600
    answered_right(interface, spec)


# The per-tool limits that used to differ, now one table -----------------------------------------


def tool(name: str) -> ToolSpec:
    return next(t for t in TOOLS if t.name == name)


@parametrize_interfaces
def test_attribution_targets_and_foil_are_bounded_like_tracked_tokens(interface: str) -> None:
    spec = tool("attribute")
    huge = ["x" * 1_000_000] * (2 if interface == "cli" else 14)
    refused(interface, spec, example(spec, targets=huge), "1,000,000 characters", "256")
    refused(interface, spec, example(spec, targets=[" a"] * 17), "17 targets", "limit of 16")
    refused(interface, spec, example(spec, foil="y" * 1_000_000), "foil string")


@pytest.mark.parametrize("interface", ["api", "mcp"])
def test_compare_tracked_strings_and_long_layer_lists_are_bounded(interface: str) -> None:
    spec = tool("compare")
    tracked = ["z" * 100_000] * 32
    refused(interface, spec, example(spec, track_tokens=tracked), "100,000 characters")
    for name in ("compare", "attribute", "analyze"):
        message = refused(
            interface, tool(name), example(tool(name), layers=[0] * 1_000_000), "1,000,000 layers"
        )
        assert "0, 0" not in message


@pytest.mark.parametrize("interface", ["api", "mcp"])
@pytest.mark.parametrize("value", [["0"], [True], [0.0]])
def test_positions_and_layers_are_strict_integers(interface: str, value: list[Any]) -> None:
    spec = tool("analyze")
    refused(interface, spec, example(spec, positions=value), "positions")
    refused(interface, spec, example(spec, layers=value), "layers")


def test_the_command_line_has_the_same_caps_and_can_raise_them() -> None:
    spec = tool("analyze")
    refused("cli", spec, example(spec, top_k=101), "from 1 to 100 (--max-top-k)")
    result = CliRunner().invoke(
        app, [*cli_argv(spec, example(spec, top_k=120)), "--max-top-k", "200", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["final_prediction"]) == 120


@pytest.mark.parametrize("interface", ["mcp", "cli"])
def test_an_oversized_grid_batch_is_refused_with_the_figure_before_compute(
    interface: str,
) -> None:
    """64 prompts x all positions x every layer x top_k 100 x 32 tracked tokens passed 8 GB."""
    spec = tool("analyze")
    prompts = [f"Prompt {n}: " + "the cat sat on the mat and " * 12 for n in range(64)]
    args = example(
        spec,
        prompts=prompts,
        positions="all",
        layer_strategy="all",
        include_embeddings=True,
        top_k=100,
        track_tokens=[f" w{n}" for n in range(32)],
    )
    del args["prompt"]
    message = refused(interface, spec, args, "MiB of JSON", "response limit of 32 MiB")
    assert float(message.split("about ")[1].split(" MiB")[0].replace(",", "")) > 100


def test_a_plot_with_too_many_cells_is_refused_before_compute() -> None:
    spec = tool("analyze")
    limits.configure(replace(limits.current(), max_plot_cells=10))
    args = example(spec, positions="all", layer_strategy="all", plot=True)
    refused("mcp", spec, args, "heatmap would have", "at most 10")


# A request's limits, checked by the gate alone. The checks that read a request (its prompts,
# config, memory and result size) may be called from runtime/gate.py only; model loads and lens
# fitting check their own memory (the weights, a fit), and the lens math its own top_k.
REQUEST_CHECKS = {
    "check_prompt_chars",
    "check_prompt_tokens",
    "check_tracked",
    "check_token_string",
    "check_float_arg",
    "check_result_bytes",
    "check_count",
}


def test_a_request_is_checked_by_the_gate_alone() -> None:
    """No second copy of a limit or its message: ``analyses/guards.py`` re-checked prompts,
    configs and the forward's memory with an estimate of its own that had drifted from the
    gate's, and the gate repeated the lens's top_k message."""
    import ast

    from tests.conftest import ROOT

    callers: dict[str, set[str]] = {}
    estimates: list[str] = []
    vocab_messages: list[str] = []
    for path in sorted((ROOT / "lazarus_mcp").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        source = path.read_text()
        if "(the vocab size)" in source:
            vocab_messages.append(name)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name == "forward_bytes":
                estimates.append(name)
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                first = node.args[0] if node.args else None
                if called == "check_memory" and "forward" in str(getattr(first, "value", "")):
                    called = "check_memory (a forward)"
                if called in {*REQUEST_CHECKS, "check_memory (a forward)"}:
                    callers.setdefault(called, set()).add(name)
    allowed = {"lazarus_mcp/runtime/gate.py", "lazarus_mcp/runtime/limits.py"}
    assert {check: files - allowed for check, files in callers.items()} == {
        check: set() for check in callers
    }
    assert "check_prompt_chars" in callers and "check_memory (a forward)" in callers
    assert estimates == ["lazarus_mcp/runtime/gate.py"]
    assert vocab_messages == ["lazarus_mcp/lens/cells.py"]


def _estimate(loaded: Any, config: Any, prompts: list[str]) -> int:
    """The gate's memory estimate of a lens call: the smallest budget it admits (bisection)."""
    request = gate.Request("lens", prompts, config)
    before = limits.current()
    low, high = 0, 1 << 32
    try:
        while low < high:
            middle = (low + high) // 2
            limits.configure(replace(before, memory_budget=middle))
            try:
                worker.run_sync(gate.admit, [loaded], request)
                high = middle
            except limits.LimitExceededError:
                low = middle + 1
    finally:
        limits.configure(before)
    return low


def test_the_memory_estimate_counts_the_milestone_rows() -> None:
    """Milestones read every block at each prompt's last position whatever is displayed: N rows
    x V floats per prompt through the lens's dozen working arrays, and N kept states. With one
    displayed layer the estimate once counted one row; it must count the N."""
    from lazarus_mcp.modeling.loading import load
    from lazarus_mcp.schema import AnalysisConfig

    loaded = worker.run_sync(load, LLAMA)
    info = loaded.info
    config = AnalysisConfig(custom_layers=[5], use_chat_template=False)
    for prompts in (["The capital of France is"], ["The capital of France is", "Hi there"]):
        milestones = gate.LENS_ARRAYS * info.num_layers * len(prompts) * info.vocab_size * 4
        kept = info.num_layers * len(prompts) * info.hidden_size * 4
        assert _estimate(loaded, config, prompts) >= milestones + kept, prompts
