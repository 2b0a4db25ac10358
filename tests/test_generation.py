"""Generation over the KV cache: each step's lens equals ``analyze --positions all`` over the
whole sequence at that position (every family, sliding windows passed), and the sampler, the
stops and the gate behave. transformers' greedy tokens: ``test_generation_torch.py``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.analyses.analysis import plan_lens
from lazarus_mcp.analyses.batch import analyze_encoded
from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.generation.run import generate_loaded
from lazarus_mcp.generation.sampling import nucleus_logits
from lazarus_mcp.generation.stopping import StopWatch
from lazarus_mcp.lens.tokens import EncodedPrompt
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.runtime import limits, worker
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.schema import AnalysisConfig, AnalysisResult, LayerStrategy
from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult
from tests.checkpoints import build_checkpoint
from tests.family_configs import FAMILY_CONFIGS

PROMPT = "The capital of France is Paris . The capital of Japan is"  # > every test window
TOL = 1e-5
NATS_TOL = 1e-4


def full_sequence_grid(loaded: LoadedModel, result: GenerationResult) -> AnalysisResult:
    """``analyze --positions all`` over the prompt and every generated token but the last."""
    ids = result.token_ids + result.generated_token_ids[:-1]
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.CUSTOM,
        custom_layers=result.captured_layers,
        top_k=result.config.top_k,
        track_tokens=result.config.track_tokens,
        positions="all",
        lens=result.config.lens,
    )
    encoded = EncodedPrompt(result.text_seen, ids, result.chat_template_applied)

    def run() -> AnalysisResult:
        plan = plan_lens(loaded, config)
        return analyze_encoded(loaded, [result.prompt], [encoded], config, plan)[0]

    return worker.run_sync(run)


def assert_steps_match_grid(loaded: LoadedModel, result: GenerationResult) -> float:
    """Every step against the grid's column at its position; returns the worst probability
    difference. Entropy and KL (float32 sums over the vocabulary, in nats) must agree within
    NATS_TOL of their size: transformers' own cached and full forwards of SmolLM2-135M differ by
    1.4e-5 nats in a block's entropy (and 6.7e-6 in a probability)."""
    grid = full_sequence_grid(loaded, result)
    assert grid.grid is not None
    worst = 0.0
    for step in result.steps:
        column = grid.grid[step.position]
        assert column.position == step.position
        ours = [(t.token_id, t.probability) for t in step.final_prediction]
        theirs = [(t.token_id, t.probability) for t in column.final_prediction]
        worst = max(worst, _same_top(ours, theirs))
        for mine, ref in zip(step.layer_predictions, column.layer_predictions, strict=True):
            assert mine.layer_idx == ref.layer_idx
            pairs = [(t.token_id, t.probability) for t in mine.top_k]
            worst = max(worst, _same_top(pairs, [(t.token_id, t.probability) for t in ref.top_k]))
            for a, b in ((mine.entropy, ref.entropy), (mine.kl_divergence, ref.kl_divergence)):
                assert abs(a - b) <= NATS_TOL * max(1.0, b), (step.step, mine.layer_idx, a, b)
        for mine_evo, ref_evo in zip(step.token_evolutions, column.token_evolutions, strict=True):
            for a, b in zip(mine_evo.layers, ref_evo.layers, strict=True):
                worst = max(worst, abs(a.probability - b.probability))
                assert a.rank == b.rank or abs(a.probability - b.probability) < TOL
    return worst


def _same_top(ours: list[tuple[int, float]], theirs: list[tuple[int, float]]) -> float:
    """Top-k lists equal up to TOL (tokens whose probabilities tie within TOL may swap)."""
    ref = dict(theirs)
    kth = min(p for _, p in theirs)
    worst = 0.0
    for token, p in ours:
        if token in ref:
            worst = max(worst, abs(p - ref[token]))
        else:
            assert p <= kth + TOL, (token, p, theirs)
    return worst


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return worker.run_sync(load, "demo")


def generate(loaded: LoadedModel, prompt: str = PROMPT, **fields: object) -> GenerationResult:
    config = GenerationConfig.model_validate(fields)
    return worker.run_sync(generate_loaded, loaded, prompt, config)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_steps_equal_the_grid_over_the_whole_sequence(tmp_path: Path, family: str) -> None:
    directory = build_checkpoint(tmp_path / family, family)
    loaded = worker.run_sync(load, str(directory))
    try:
        result = generate(
            loaded,
            max_new_tokens=8,
            layer_strategy="all",
            top_k=5,
            use_chat_template=False,
            track_tokens=[" capital", " is"],
        )
    except UnsupportedModelError as exc:
        # A cache the step mode cannot drive is refused with the reason, never served wrong.
        assert "token-by-token" in str(exc)
        pytest.skip(f"{family}: {exc}")
    assert len(result.token_ids) > 8  # past every sliding window of the test configs
    assert result.steps[0].position == len(result.token_ids) - 1
    assert result.fidelity.top1_agrees and result.fidelity.max_abs_prob_diff < TOL
    if result.stop_reason == "max_tokens":
        assert len(result.steps) == 8
    assert assert_steps_match_grid(loaded, result) <= TOL


def test_greedy_emits_the_top_token_and_decides_by_the_last_block(demo: LoadedModel) -> None:
    result = generate(demo, "The capital of France is", max_new_tokens=6)
    assert result.config.temperature == 0.0
    for step in result.steps:
        assert step.rank == 1 and step.token_id == step.final_prediction[0].token_id
        assert step.emitted[-1].rank == 1  # the last block is the model's output
        assert step.decided_layer is not None
    assert result.milestones.decided_layers == [s.decided_layer for s in result.steps]
    assert result.generated_token_ids == [s.token_id for s in result.steps]


def test_eos_ends_the_generation(demo: LoadedModel) -> None:
    result = generate(demo, "The capital of France is", max_new_tokens=20)
    assert result.stop_reason == "eos"
    assert result.generated_token_ids[-1] == 1  # the demo's </s>
    assert "</s>" not in result.generated_text


def test_sampling_with_a_seed_is_reproducible(demo: LoadedModel) -> None:
    fields = {"max_new_tokens": 12, "temperature": 1.5, "top_p": 0.95, "use_chat_template": False}
    a = generate(demo, "one two three", seed=7, **fields)
    b = generate(demo, "one two three", seed=7, **fields)
    assert a.generated_token_ids == b.generated_token_ids
    assert a.seed == 7 and a.config.temperature == 1.5 and a.config.top_p == 0.95
    drawn = generate(demo, "one two three", **fields)
    again = generate(demo, "one two three", seed=drawn.seed, **fields)
    assert again.generated_token_ids == drawn.generated_token_ids
    others = {
        tuple(generate(demo, "one two three", seed=s, **fields).generated_token_ids)
        for s in range(5)
    }
    assert len(others) > 1  # the seed matters
    assert mx.random.state is not None


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = mx.log(mx.array([0.5, 0.3, 0.15, 0.05]))
    kept = np.isfinite(np.array(nucleus_logits(logits, 0.7)))
    assert kept.tolist() == [True, True, False, False]
    assert np.isfinite(np.array(nucleus_logits(logits, 0.5))).tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert np.isfinite(np.array(nucleus_logits(logits, 1.0))).all()


def test_stop_string_cuts_the_text(demo: LoadedModel) -> None:
    free = generate(demo, PROMPT, max_new_tokens=10, use_chat_template=False)
    text = free.generated_text
    assert len(text) > 2
    stop = text[1:3]
    stopped = generate(demo, PROMPT, max_new_tokens=10, use_chat_template=False, stop=[stop])
    assert stopped.stop_reason == "stop" and stopped.stop_string == stop
    assert stopped.generated_text == text[: text.index(stop)]
    assert stopped.generated_token_ids == free.generated_token_ids[: len(stopped.steps)]


def test_stop_watch_finds_a_string_split_across_tokens() -> None:
    watch = StopWatch(["Paris."])
    assert watch.find("The answer: Par") is None
    assert watch.find("The answer: Paris.") == (12, "Paris.")


@pytest.mark.anyio
async def test_hostile_generations_are_refused_before_any_work(demo: LoadedModel) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=10**9)
    with pytest.raises(ValueError, match="stop string"):
        GenerationConfig(stop=["x" * 100_000])
    analyzer = ModelAnalyzer(demo)
    hostile = [
        (GenerationConfig(top_k=demo.info.vocab_size, layer_strategy="all"), "top_k"),
        (GenerationConfig(max_new_tokens=4000), "context"),
    ]
    for config, message in hostile:
        with pytest.raises(InvalidRequestError, match=message):
            await analyzer.generate(PROMPT, config)
    # The result's size (100 tokens x 6 blocks x top-100 is ~7 MiB of JSON) and the plot's
    # cells (600), against a budget of 1 MiB and 500 cells.
    before = limits.current()
    limits.configure(replace(before, max_result_bytes=2**20, max_plot_cells=500))
    try:
        big = GenerationConfig(max_new_tokens=100, layer_strategy="all", top_k=100)
        with pytest.raises(InvalidRequestError, match="MiB of JSON"):
            await analyzer.generate(PROMPT, big)
        wide = GenerationConfig(max_new_tokens=100, layer_strategy="all")
        with pytest.raises(InvalidRequestError, match="heatmap"):
            await analyzer.generate(PROMPT, wide, plot=True)
    finally:
        limits.configure(before)
