"""The MCP server in memory (``mcp.Client(server)``), on the real parity checkpoints.

Each test builds its own server; tests that count loads or watch the cache give it a fresh
:class:`ModelCache`, the others share one so each checkpoint loads once per module.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp.types import CallToolResult

from lazarus_mcp.runtime import worker
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.schema import (
    AnalysisResult,
    AttributionResult,
    CompareResult,
    LayerStrategy,
    ModelInfo,
)
from lazarus_mcp.schema.generation import GenerationResult
from lazarus_mcp.server.app import create_server, validation_message
from lazarus_mcp.tools.lens import AnalyzeInput, TokenTracking
from lazarus_mcp.tools.models import LoadedModels, ModelStatus
from tests.conftest import PARITY, PARITY_MODELS, parity_ref
from tests.parity_check import PROB_TOL, assert_matches_reference

pytestmark = pytest.mark.anyio

LLAMA = str(PARITY / "llama")
GEMMA2 = str(PARITY / "gemma2")
TOOLS = {
    "analyze",
    "track_tokens",
    "attribute",
    "compare",
    "generate",
    "model_info",
    "loaded_models",
}


@pytest.fixture(scope="module")
def shared_cache() -> ModelCache:
    return ModelCache(max_models=len(PARITY_MODELS))


def ok(result: CallToolResult) -> dict[str, Any]:
    text = result.content[0].text if result.content else ""
    assert not result.is_error, text
    assert text, "a text rendering for text-only clients"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_line(result: CallToolResult) -> str:
    assert result.is_error
    assert result.structured_content is None
    [block] = result.content
    assert "\n" not in block.text and "Traceback" not in block.text
    return block.text


def raw_case(name: str, raw: bool = True) -> dict[str, Any]:
    return next(c for c in parity_ref(name)["cases"] if c["raw"] is raw)


async def test_tools_are_listed_with_schemas_and_annotations() -> None:
    async with Client(create_server(ModelCache())) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.idempotent_hint is True
        assert len(tool.description) > 150, tool.name
        assert tool.input_schema["additionalProperties"] is False
        assert tool.output_schema["type"] == "object"
    analyze = listed["analyze"].input_schema
    assert set(analyze["properties"]) == {
        "model",
        "prompt",
        "layer_strategy",
        "layer_step",
        "layers",
        "top_k",
        "track_tokens",
        "raw",
        "embedding_scale",
        # The grid, batches and pictures (issue 11).
        "prompts",
        "positions",
        "include_embeddings",
        "plot",
        "plot_metric",
        # Tuned and Jacobian lenses under --lens-dir (issue 16).
        "lens",
    }
    assert analyze["properties"]["embedding_scale"]["anyOf"][0]["exclusiveMinimum"] == 0
    # prompt or prompts: the tool says which is missing (BAD_CALLS).
    assert sorted(analyze["required"]) == ["model"]
    top_k = analyze["properties"]["top_k"]
    assert (top_k["default"], top_k["minimum"], top_k["maximum"]) == (5, 1, 100)
    assert analyze["properties"]["layer_step"]["minimum"] == 1
    assert analyze["properties"]["raw"]["default"] is False
    assert analyze["$defs"]["LayerStrategy"]["enum"] == [s.value for s in LayerStrategy]
    assert all(p.get("description") for p in analyze["properties"].values())
    outputs = {
        "analyze": AnalysisResult,
        "track_tokens": TokenTracking,
        "model_info": ModelStatus,
        "loaded_models": LoadedModels,
        "attribute": AttributionResult,
        "compare": CompareResult,
        "generate": GenerationResult,
    }
    for name, model in outputs.items():
        assert set(listed[name].output_schema["properties"]) == set(model.model_fields), name
    assert set(ModelInfo.model_fields) < set(ModelStatus.model_fields)
    assert sorted(listed["track_tokens"].input_schema["required"]) == ["model", "prompt", "tokens"]


@pytest.mark.parametrize("name", PARITY_MODELS)
async def test_analyze_matches_the_parity_reference(name: str, shared_cache: ModelCache) -> None:
    ref = parity_ref(name)
    async with Client(create_server(shared_cache)) as client:
        for case in ref["cases"]:
            args = {"layer_strategy": "all", "top_k": 10, "raw": case["raw"]}
            result = await client.call_tool(
                "analyze", {"model": str(PARITY / name), "prompt": case["prompt"], **args}
            )
            data = ok(result)
            AnalysisResult.model_validate(data)
            assert data["chat_template_applied"] is (not case["raw"])
            assert data["captured_layers"] == list(range(ref["num_layers"]))
            assert_matches_reference(data, case)
            final = np.exp(np.asarray(case["layers"][-1]["logprobs"]))
            for token in data["final_prediction"]:
                assert abs(token["probability"] - final[token["token_id"]]) <= PROB_TOL


def rank_bounds(probs: np.ndarray, p: float) -> tuple[int, int]:
    """The 1-based ranks ``p`` may have among ``probs``, given the tolerance (ties may swap)."""
    return 1 + int(np.sum(probs > p + PROB_TOL)), 1 + int(np.sum(probs > p - PROB_TOL))


@pytest.mark.parametrize("name", ["llama", "gemma2", "qwen3"])
async def test_track_tokens_matches_the_parity_reference(
    name: str, shared_cache: ModelCache
) -> None:
    case = raw_case(name)
    ids = dict(zip(case["tokens"], case["input_ids"], strict=True))
    tokens = [" France", " capital", "The"]
    args = {"model": str(PARITY / name), "prompt": case["prompt"], "tokens": tokens, "raw": True}
    async with Client(create_server(shared_cache)) as client:
        data = ok(await client.call_tool("track_tokens", args))
        partial = ok(await client.call_tool("track_tokens", {**args, "layers": [0, -1]}))
        analyzed = ok(
            await client.call_tool(
                "analyze",
                {
                    "model": args["model"],
                    "prompt": case["prompt"],
                    "raw": True,
                    "layer_strategy": "all",
                    "track_tokens": tokens,
                },
            )
        )
    assert data["captured_layers"] == list(range(len(case["layers"])))
    assert data["tokens"] == case["tokens"]
    # The same numbers as the token-evolution part of a full analysis.
    assert data["token_evolutions"] == analyzed["token_evolutions"]
    assert partial["captured_layers"] == [0, len(case["layers"]) - 1]
    for query, evo in zip(tokens, data["token_evolutions"], strict=True):
        assert evo["query"] == query and evo["token_id"] == ids[query]
        assert not evo["multi_token"]
        for step, layer in zip(evo["layers"], case["layers"], strict=True):
            probs = np.exp(np.asarray(layer["logprobs"]))
            assert step["layer_idx"] == layer["layer_idx"]
            assert abs(step["probability"] - probs[evo["token_id"]]) <= PROB_TOL
            low, high = rank_bounds(probs, step["probability"])
            assert low <= step["rank"] <= high
        ranks_one = [s["layer_idx"] for s in evo["layers"] if s["rank"] == 1]
        assert evo["emergence_layer"] == (ranks_one[0] if ranks_one else None)
        assert evo["final_probability"] == evo["layers"][-1]["probability"]
        # Fewer captured layers batch the projection differently: equal up to float rounding.
        first, last = partial["token_evolutions"][tokens.index(query)]["layers"]
        for got, full in ((first, evo["layers"][0]), (last, evo["layers"][-1])):
            assert got == {**full, "probability": pytest.approx(full["probability"], rel=1e-4)}


async def test_model_info_matches_the_reference_and_says_if_loaded(
    shared_cache: ModelCache,
) -> None:
    async with Client(create_server(shared_cache)) as client:
        for name in PARITY_MODELS:
            ref = parity_ref(name)
            info = ok(await client.call_tool("model_info", {"model": str(PARITY / name)}))
            assert info["model_id"] == str(PARITY / name)
            assert info["family"] == ref["model_type"]
            assert info["num_layers"] == ref["num_layers"]
            assert info["hidden_size"] == ref["hidden_size"]
            assert info["vocab_size"] == ref["vocab_size"]
            assert info["tied_embeddings"] is ref["tie_word_embeddings"]
            assert info["final_logit_softcap"] == ref["final_logit_softcapping"]
            assert info["has_chat_template"] is True
    async with Client(create_server(ModelCache())) as client:
        first = ok(await client.call_tool("model_info", {"model": LLAMA}))
        second = ok(await client.call_tool("model_info", {"model": LLAMA}))
    assert (first["already_loaded"], second["already_loaded"]) == (False, True)
    assert {**first, "already_loaded": True} == second


async def test_loaded_models_follow_the_cache_and_its_evictions() -> None:
    cache = ModelCache(max_models=2)
    names = ["llama", "mistral", "qwen3"]
    async with Client(create_server(cache)) as client:
        empty = ok(await client.call_tool("loaded_models", {}))
        for name in names:
            ok(await client.call_tool("model_info", {"model": str(PARITY / name)}))
        held = ok(await client.call_tool("loaded_models", {}))
        again = ok(await client.call_tool("model_info", {"model": LLAMA}))
    assert empty["models"] == [] and empty["memory_used_bytes"] == 0
    # The least recently used (llama) went; the others are listed least recently used first.
    assert [m["model"]["model_id"] for m in held["models"]] == [str(PARITY / n) for n in names[1:]]
    assert held["max_models"] == 2 and held["memory_budget_bytes"] is None
    assert held["memory_used_bytes"] == sum(m["memory_bytes"] for m in held["models"]) > 0
    assert again["already_loaded"] is False
    assert cache.loads == 4


BAD_CALLS = [
    ("analyze", {"model": LLAMA}, "missing required argument 'prompt'"),
    ("analyze", {"model": LLAMA, "prompt": ""}, "invalid argument 'prompt'"),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "top_k": 0}, "invalid argument 'top_k'"),
    (
        "analyze",
        {"model": LLAMA, "prompt": "Hi", "top_k": 101},
        "top_k must be an integer from 1 to 100",
    ),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "top_k": "many"}, "invalid argument 'top_k'"),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "layer_step": 0}, "'layer_step'"),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "layers": "0,4"}, "invalid argument 'layers'"),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "layers": [0, 6]}, "layer 6 is out of range"),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "layers": [-7]}, "layer -7 is out of range"),
    (
        "analyze",
        {"model": LLAMA, "prompt": "Hi", "layer_strategy": "custom"},
        "'custom' needs layers",
    ),
    (
        "analyze",
        {"model": LLAMA, "prompt": "Hi", "layer_strategy": "diagonal"},
        "invalid argument 'layer_strategy'",
    ),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "lyaers": [1]}, "unknown argument 'lyaers'"),
    ("analyze", {"model": "/no/such/model", "prompt": "Hi"}, "not found"),
    ("analyze", {"model": "not a model", "prompt": "Hi"}, "not found"),
    ("analyze", {"model": LLAMA, "prompt": "Hi", "track_tokens": [""]}, "empty token"),
    ("track_tokens", {"model": LLAMA, "prompt": "Hi"}, "missing required argument 'tokens'"),
    ("track_tokens", {"model": LLAMA, "prompt": "Hi", "tokens": []}, "invalid argument 'tokens'"),
    ("track_tokens", {"model": LLAMA, "prompt": "Hi", "tokens": [""]}, "empty token"),
    ("track_tokens", {"model": LLAMA, "prompt": "Hi", "tokens": ["a"], "layers": [9]}, "layer 9"),
    ("model_info", {}, "missing required argument 'model'"),
    ("model_info", {"model": "/no/such/model"}, "not found"),
    ("loaded_models", {"all": True}, "unknown argument 'all'"),
]


async def test_bad_input_is_an_error_result_with_one_line(shared_cache: ModelCache) -> None:
    async with Client(create_server(shared_cache)) as client:
        for tool, args, expected in BAD_CALLS:
            message = error_line(await client.call_tool(tool, args))
            assert expected in message, (tool, args, message)
        # The server still answers, and nothing that failed to load was cached.
        ok(await client.call_tool("analyze", {"model": LLAMA, "prompt": "Hi"}))
        held = ok(await client.call_tool("loaded_models", {}))
    assert "/no/such/model" not in json.dumps(held)
    assert shared_cache.peek("/no/such/model") is None


async def test_a_model_that_failed_to_load_is_retried(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(LLAMA, model)
    good = (model / "config.json").read_text()
    (model / "config.json").write_text("{not json")
    cache = ModelCache()
    async with Client(create_server(cache)) as client:
        message = error_line(await client.call_tool("model_info", {"model": str(model)}))
        assert "config.json" in message
        (model / "config.json").write_text(good)
        info = ok(await client.call_tool("model_info", {"model": str(model)}))
    assert info["already_loaded"] is False and info["num_layers"] == 6
    assert cache.loads == 1


async def test_an_unexpected_exception_is_a_generic_error_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: ModelAnalyzer, prompt: str, config: Any = None, **_: Any) -> None:
        raise RuntimeError("secret internal detail")

    cache = ModelCache()
    server = create_server(cache)
    async with Client(server) as client:
        with monkeypatch.context() as patch:
            patch.setattr(ModelAnalyzer, "analyze", broken)
            with caplog.at_level(logging.ERROR, logger="lazarus_mcp.server.app"):
                message = error_line(
                    await client.call_tool("analyze", {"model": LLAMA, "prompt": "Hi"})
                )
        assert "internal error" in message and "secret" not in message
        [record] = [r for r in caplog.records if r.name == "lazarus_mcp.server.app"]
        assert record.exc_info and "secret internal detail" in str(record.exc_info[1])
        # The server and its cache are intact.
        ok(await client.call_tool("analyze", {"model": LLAMA, "prompt": "Hi"}))
    assert cache.loads == 1


def test_validation_messages_are_one_actionable_line() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        AnalyzeInput.model_validate({"model": "m", "prompt": "p", "top_k": -1, "layer_step": 0})
    message = validation_message(caught.value)
    assert message.startswith("invalid argument 'layer_step'")
    assert message.endswith("(and 1 more problem)") and "\n" not in message


async def test_progress_is_reported_while_loading_and_analyzing() -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    args = {"model": LLAMA, "prompt": "Hi"}
    async with Client(create_server(ModelCache())) as client:
        ok(await client.call_tool("analyze", args, progress_callback=on_progress))
        cold = list(seen)
        seen.clear()
        ok(await client.call_tool("analyze", args, progress_callback=on_progress))
        warm = list(seen)
        seen.clear()
        ok(await client.call_tool("analyze", args))
    assert seen == []
    for run in (cold, warm):
        values = [p for p, _, _ in run]
        assert values == sorted(values) and len(set(values)) == len(values)
        assert run[-1][:2] == (2, 2) and all(total == 2 for _, total, _ in run)
    assert cold[0][2] == f"loading model {LLAMA}"
    assert not any("loading" in (m or "") for _, _, m in warm)
    assert any("logit lens" in (m or "") for _, _, m in warm)


async def test_cheap_calls_answer_while_the_mlx_worker_is_busy() -> None:
    server = create_server(ModelCache())
    gate = threading.Event()
    # More waiting calls than anyio has helper threads (40): a cheap call must need none.
    pending = 45
    done: list[CallToolResult] = []
    async with Client(server) as client:
        ok(await client.call_tool("model_info", {"model": LLAMA}))
        # A long job on the one MLX thread (as a long analysis would be).
        blocker = worker.submit(gate.wait, 60)
        try:
            async with anyio.create_task_group() as tg:

                async def long_call(n: int) -> None:
                    args = {"model": LLAMA, "prompt": f"Hi {n}"}
                    done.append(await client.call_tool("analyze", args))

                for n in range(pending):
                    tg.start_soon(long_call, n)
                await anyio.sleep(0.5)
                with anyio.fail_after(10):
                    info = ok(await client.call_tool("model_info", {"model": LLAMA}))
                    held = ok(await client.call_tool("loaded_models", {}))
                assert done == []
                gate.set()
        finally:
            gate.set()
        assert blocker.result(timeout=10) is True
    assert info["already_loaded"] is True and len(held["models"]) == 1
    assert len(done) == pending and all(ok(result) for result in done)


CONCURRENT_CALLS = [
    (tool, {"model": model, "prompt": prompt, **extra})
    for model in (LLAMA, GEMMA2)
    for prompt in ("The capital of France is", "2 + 2 =", "Hello world")
    for tool, extra in [
        ("analyze", {}),
        ("analyze", {"layer_strategy": "all", "top_k": 7, "raw": True}),
        ("analyze", {"layers": [1, -2], "track_tokens": [" France", " ="]}),
        ("track_tokens", {"tokens": [" world", "2"], "raw": True}),
    ]
]


async def test_concurrent_calls_match_sequential_ones_and_load_each_model_once() -> None:
    assert len(CONCURRENT_CALLS) >= 20
    async with Client(create_server(ModelCache())) as client:
        sequential = [ok(await client.call_tool(tool, args)) for tool, args in CONCURRENT_CALLS]
    cache = ModelCache()
    concurrent: list[dict[str, Any] | None] = [None] * len(CONCURRENT_CALLS)
    async with Client(create_server(cache)) as client:

        async def call(index: int) -> None:
            tool, args = CONCURRENT_CALLS[index]
            concurrent[index] = ok(await client.call_tool(tool, args))

        async with anyio.create_task_group() as tg:
            for index in range(len(CONCURRENT_CALLS)):
                tg.start_soon(call, index)
    assert concurrent == sequential
    assert cache.loads == 2


async def disconnect_during(server: Any, stage: str, args: dict[str, Any]) -> None:
    """Start a call, and drop its client once the call reports ``stage``."""
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if stage in (message or ""):
            started.set()

    async def doomed_client() -> None:
        async with Client(server) as client:
            await client.call_tool("analyze", args, progress_callback=on_progress)

    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed_client)
        with anyio.fail_after(60):
            await started.wait()
        tg.cancel_scope.cancel()


async def test_a_client_that_disconnects_mid_call_leaves_the_server_usable() -> None:
    cache = ModelCache()
    server = create_server(cache)
    args = {"model": LLAMA, "prompt": "Hi", "layer_strategy": "all"}
    await disconnect_during(server, "loading", args)
    # Hold the MLX worker so that the next call is surely mid-analysis when its client goes.
    gate = threading.Event()
    worker.submit(gate.wait, 60)
    try:
        await disconnect_during(server, "logit lens", args)
    finally:
        gate.set()
    async with Client(server) as client:
        with anyio.fail_after(60):
            result = ok(await client.call_tool("analyze", args))
    async with ModelAnalyzer.from_pretrained(LLAMA, cache=cache) as analyzer:
        expected = await analyzer.analyze("Hi", AnalyzeInput(**args).config())
    assert result == expected.model_dump(mode="json")
    assert cache.loads == 1


async def test_mcp_result_is_the_python_api_result(shared_cache: ModelCache) -> None:
    args = {
        "model": GEMMA2,
        "prompt": "The capital of France is",
        "layers": [0, 3, -1],
        "top_k": 4,
        "track_tokens": [" Paris", " France"],
    }
    async with Client(create_server(shared_cache)) as client:
        data = ok(await client.call_tool("analyze", args))
    async with ModelAnalyzer.from_pretrained(GEMMA2, cache=ModelCache()) as analyzer:
        expected = await analyzer.analyze(args["prompt"], AnalyzeInput(**args).config())
    assert json.loads(json.dumps(data)) == json.loads(expected.model_dump_json())
    assert data["config"]["layer_strategy"] == "custom"


async def test_attribute_and_compare_tools(shared_cache: ModelCache) -> None:
    prompt = "The capital of France is"
    async with Client(create_server(shared_cache)) as client:
        result = await client.call_tool(
            "attribute",
            {"model": GEMMA2, "prompt": prompt, "raw": True, "targets": [" is"], "foil": " the"},
        )
        data = ok(result)
        assert result.content[0].text.startswith("Milestones for the final top-1")
        attribution = AttributionResult.model_validate(data)
        assert attribution.captured_layers == list(range(6))  # every block by default
        [target] = attribution.targets
        assert abs(target.component_sum - target.logit_precap) < 1e-3
        async with ModelAnalyzer.from_pretrained(GEMMA2, cache=shared_cache) as analyzer:
            direct = await analyzer.attribute(prompt, attribution.config)
        assert direct.model_dump(mode="json") == data
        args = {"model": LLAMA, "prompt": prompt, "raw": True, "layers": [0, -1]}
        compared = ok(await client.call_tool("compare", {**args, "prompt_b": "Hello world"}))
        assert CompareResult.model_validate(compared).captured_layers == [0, 5]
        both = await client.call_tool("compare", {**args, "prompt_b": "x", "model_b": GEMMA2})
        assert "exactly one of prompt_b" in error_line(both)
        other = await client.call_tool("compare", {**args, "model_b": "demo"})
        assert "do not share a vocabulary" in error_line(other)
