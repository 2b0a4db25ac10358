"""Prompts of a batch run through the model together, padded, and each result equals the
single-prompt result within 1e-5."""

from __future__ import annotations

from typing import Any

import pytest

from lazarus_mcp.analyses import batch
from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.introspection import ModelAnalyzer
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.conftest import PARITY

PROMPTS = [
    "The capital of France is",
    "Hi",
    "Once upon a time, in a land far away, there lived a dragon who",
    "2 + 2 =",
]
TOL = 1e-5


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal structure; floats within TOL (relative for entropies and KLs above 1 nat, which
    float32 holds to about 1e-7 relative); top-k lists equal unless a near tie reorders them."""
    if isinstance(a, float):
        assert abs(a - b) <= TOL * max(1.0, abs(b)), (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        if a and isinstance(a[0], dict) and "token_id" in a[0] and "probability" in a[0]:
            # top-k lists: compare by token, as a near tie may swap neighbours.
            pa = {t["token_id"]: t["probability"] for t in a}
            pb = {t["token_id"]: t["probability"] for t in b}
            for tid in pa.keys() & pb.keys():
                assert abs(pa[tid] - pb[tid]) <= TOL, (path, tid)
            assert len(pa.keys() ^ pb.keys()) <= 2, path
            return
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{n}]")
    elif path.endswith(("top_token", "top_token_id")):
        return  # checked through top_k
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("name", ["llama", "gemma2", "gemma3-text", "qwen3"])
def test_batch_equals_single_results(name: str) -> None:
    loaded = worker.run_sync(load, str(PARITY / name))
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        positions="all",
        include_embeddings=True,
        track_tokens=[" the", "a"],
        use_chat_template=False,
    )
    # One group: all four prompts in one padded forward pass.
    plan, encoded = worker.run_sync(batch.prepare, loaded, PROMPTS, config)
    together = worker.run_sync(batch.analyze_encoded, loaded, PROMPTS, encoded, config, plan)
    assert len({len(e.token_ids) for e in encoded}) == len(PROMPTS)  # really padded
    for prompt, result in zip(PROMPTS, together, strict=True):
        alone = worker.run_sync(analyze_loaded, loaded, prompt, config)
        _close(result.model_dump(mode="json"), alone.model_dump(mode="json"))


@pytest.mark.anyio
async def test_analyze_batch_keeps_input_order_and_reports_progress() -> None:
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    config = AnalysisConfig(layer_strategy=LayerStrategy.FIRST_LAST, use_chat_template=False)
    async with ModelAnalyzer.from_pretrained(str(PARITY / "mistral")) as analyzer:
        results = await analyzer.analyze_batch(PROMPTS, config, on_progress=progress)
        alone = await analyzer.analyze(PROMPTS[2], config)
        with pytest.raises(InvalidRequestError, match="prompt 2 of 3: the prompt is empty"):
            await analyzer.analyze_batch(["a", "", "b"], config)
    assert [r.prompt for r in results] == PROMPTS
    assert seen[-1] == (len(PROMPTS), len(PROMPTS))
    assert [t.token_id for t in results[2].final_prediction] == [
        t.token_id for t in alone.final_prediction
    ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_groups_are_by_length_within_the_budget() -> None:
    lengths = [5, 100, 6, 7, 90]
    groups = batch.plan_groups(lengths, max_tokens=300, max_prompts=3)
    assert sorted(i for g in groups for i in g) == list(range(5))
    assert groups[0] == [0, 2, 3]  # the short ones together
    for g in groups:
        assert len(g) <= 3
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 300
    assert batch.plan_groups([5000], max_tokens=10) == [[0]]


def test_multi_token_strings_in_a_batch_and_out_of_the_grid() -> None:
    """A multi-token tracked string is scored as a continuation of each prompt (its own
    forward); in a grid it is refused with a message that says what to do."""
    loaded = worker.run_sync(load, str(PARITY / "llama"))
    config = AnalysisConfig(track_tokens=[" Parisian"], use_chat_template=False)
    plan, encoded = worker.run_sync(batch.prepare, loaded, PROMPTS[:2], config)
    assert plan.multi_token
    together = worker.run_sync(batch.analyze_encoded, loaded, PROMPTS[:2], encoded, config, plan)
    for prompt, result in zip(PROMPTS[:2], together, strict=True):
        alone = worker.run_sync(analyze_loaded, loaded, prompt, config)
        assert result.model_dump(mode="json") == alone.model_dump(mode="json")
        assert result.token_evolutions[0].final_sequence_logprob is not None
    grid = config.model_copy(update={"positions": "all"})
    with pytest.raises(
        InvalidRequestError, match="multi-token track_tokens are scored at the last"
    ):
        worker.run_sync(analyze_loaded, loaded, PROMPTS[0], grid)
