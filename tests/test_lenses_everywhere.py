"""Learned lenses in every analysis, on the parity llama with a tuned and a Jacobian lens made
here (trained and fitted in MLX, as the other lens tests do):

- every result of every tool of the registry says which lens it read, ``lens: {kind, path,
  fit}``, the logit lens included, identically through the API, MCP and the CLI;
- ``generate --lens DIR``: each step equals ``analyze --lens DIR --positions all`` at its
  position within 1e-5;
- ``attribute --lens DIR`` decomposes the lens's reading of every block: the components (each
  through the lens's linear part, a tuned lens's bias one more) sum to the lens's logit there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lazarus_mcp.analyses.attribution import attribute_loaded
from lazarus_mcp.lens.readout import make_lens
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.lenses import corpus, jobs
from lazarus_mcp.lenses.jacobian_fit import JacobianSettings
from lazarus_mcp.lenses.tuned_train import TunedRecipe
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AttributionConfig
from lazarus_mcp.tools import TOOLS
from lazarus_mcp.tools.spec import ToolSpec
from tests.checkpoints import build_checkpoint
from tests.conftest import PARITY
from tests.test_gate import call, example
from tests.test_generation import TOL, assert_steps_match_grid, generate

LLAMA = PARITY / "llama"
PROMPT = "The capital of France is Paris . The capital of Japan is"
LOGIT = {"kind": "logit", "path": None, "fit": None}
KINDS = ["tuned", "jacobian"]
READING = [t for t in TOOLS if "lens" in t.inputs.model_fields]


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    if not LLAMA.is_dir():
        pytest.skip("the shared parity checkpoints are not present")
    return worker.run_sync(load, str(LLAMA))


@pytest.fixture(scope="module")
def lenses(llama: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_lenses(llama, tmp_path_factory.mktemp("lenses"))


def lens_reports(value: Any) -> list[Any]:
    """Every part of a result that reports a fidelity (it read blocks through a lens) and what
    it says its lens was; ``None`` where it says nothing."""
    found: list[Any] = []
    if isinstance(value, dict):
        if "fidelity" in value:
            found.append(value.get("lens"))
        for item in value.values():
            found += lens_reports(item)
    elif isinstance(value, list):
        for item in value:
            found += lens_reports(item)
    return found


def test_every_reading_tool_is_covered() -> None:
    """A later tool that reads blocks through a lens takes ``lens`` (and is covered below)."""
    reading = {t.name for t in READING}
    assert {"analyze", "track_tokens", "attribute", "compare", "generate"} <= reading
    computing = {t.name for t in TOOLS if "prompt" in t.inputs.model_fields}
    assert computing == reading


@pytest.mark.parametrize("spec", READING, ids=lambda t: t.name)
def test_every_result_says_which_lens_it_read(spec: ToolSpec, lenses: dict[str, Path]) -> None:
    """The logit lens as ``{kind: logit, path: null, fit: null}``, a learned lens by kind, path
    and held-out fit; the same JSON from the API, MCP and the command line."""
    for lens, expected in (("logit", None), (str(lenses["tuned"]), "tuned")):
        args = example(spec, lens=lens)
        if spec.name == "analyze":
            args = {**args, "positions": "all"}  # the grid too
        answers = {}
        for interface in ("api", "mcp", "cli"):
            outcome = call(interface, spec, args)
            assert outcome.error is None, (interface, outcome.error)
            reports = lens_reports(outcome.data)
            assert reports, f"{spec.name}: no part of the result reports a lens"
            for report in reports:
                if expected is None:
                    assert report == LOGIT, (interface, report)
                else:
                    assert report["kind"] == expected and report["path"] == lens, report
                    assert report["fit"]["mean_kl_lens"] >= 0, report
            answers[interface] = outcome.data
        assert answers["api"] == answers["mcp"] == answers["cli"]


def test_a_batch_says_which_lens_each_result_read(lenses: dict[str, Path]) -> None:
    [spec] = [t for t in TOOLS if t.name == "analyze"]
    args = {**example(spec), "prompts": ["The capital of France is", "Hello"]}
    del args["prompt"]
    outcome = call("api", spec, {**args, "lens": str(lenses["jacobian"])})
    assert outcome.data is not None
    assert [r["lens"]["kind"] for r in outcome.data["results"]] == ["jacobian", "jacobian"]
    logit = call("mcp", spec, args)
    assert logit.data is not None
    assert [r["lens"] for r in logit.data["results"]] == [LOGIT, LOGIT]


def make_lenses(loaded: LoadedModel, root: Path) -> dict[str, Path]:
    """A tuned lens trained (12 steps) and a Jacobian lens fitted on the model's own text."""
    n = loaded.info.num_layers
    seqs = worker.run_sync(corpus.sample_sequences, loaded.model, 6, 24, 0, 5)
    recipe = TunedRecipe(steps=12, batch_sequences=2)
    worker.run_sync(jobs.train_tuned_lens, loaded, seqs[:4], root / "tuned", recipe, seqs[4:])
    settings = JacobianSettings(tuple(range(n - 1)), n - 1, skip_first=4)
    worker.run_sync(jobs.fit_jacobian_lens, loaded, seqs[:2], root / "jacobian", settings)
    return {"tuned": root / "tuned", "jacobian": root / "jacobian"}


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, dict[str, Path]]:
    """gemma2: sliding windows (the prompt is past them), the embedding scale, soft-capping.
    (A built checkpoint, as test_generation.py's: on the parity llama under MKL a one-token step
    differs from the full forward by up to 1.7e-5 in probability, under the logit lens and a
    learned lens alike, and by 0 with the reference BLAS: MKL rounds a row by the matrix's
    height, the engine's open item, not the lens's.)"""
    root = tmp_path_factory.mktemp("gemma2")
    loaded = worker.run_sync(load, str(build_checkpoint(root / "model", "gemma2")))
    return loaded, make_lenses(loaded, root)


@pytest.mark.parametrize("kind", KINDS)
def test_generate_steps_equal_the_grid_under_a_learned_lens(
    gemma2: tuple[LoadedModel, dict[str, Path]], kind: str
) -> None:
    loaded, lenses = gemma2
    path = str(lenses[kind])
    settings = {"max_new_tokens": 8, "layer_strategy": "all", "use_chat_template": False}
    result = generate(loaded, PROMPT, **settings, top_k=5, track_tokens=[" capital"], lens=path)
    assert (result.lens.kind, result.lens.path) == (kind, path)
    assert len(result.token_ids) > 8  # past the sliding window
    assert assert_steps_match_grid(loaded, result) <= TOL
    # The lens changes what the early blocks read; block N-1 stays the model's own logits.
    logit = generate(loaded, PROMPT, **settings, top_k=5)
    assert logit.generated_token_ids == result.generated_token_ids
    first, plain = result.steps[0], logit.steps[0]
    assert first.layer_predictions[-1].top_k == plain.layer_predictions[-1].top_k
    assert first.layer_predictions[0].top_k != plain.layer_predictions[0].top_k


@pytest.mark.parametrize("kind", ["logit", *KINDS])
def test_attribution_decomposes_the_lens_at_every_block(
    llama: LoadedModel, lenses: dict[str, Path], kind: str
) -> None:
    """At every block before the last, the components sum to the logit the lens reads there
    (through the seam's own readout of the block's residual), for every target."""
    lens = "logit" if kind == "logit" else str(lenses[kind])
    config = AttributionConfig(
        layer_strategy="all", use_chat_template=False, track_tokens=[" Paris", " the"], lens=lens
    )
    result = worker.run_sync(attribute_loaded, llama, PROMPT, config)
    n = llama.info.num_layers
    assert [b.layer_idx for b in result.block_attributions] == list(range(n - 1))
    ids = [t.token_id for t in result.targets]

    def seam_logits() -> dict[int, np.ndarray]:
        hidden, _ = forward_with_taps(llama.model, result.token_ids, list(range(n)))
        reader = make_lens(llama, lens)
        return {i: np.array(reader.readout(hidden[i][None], i)[0]) for i in range(n)}

    reads = worker.run_sync(seam_logits)
    for block in result.block_attributions:
        expected = reads[block.layer_idx][ids]
        np.testing.assert_allclose(block.logits, expected, rtol=1e-4, atol=1e-4)
        sums = np.sum([c.logits for c in block.components], axis=0, dtype=np.float64)
        np.testing.assert_allclose(sums, block.logits, rtol=1e-4, atol=1e-4)
        kinds = [c.kind for c in block.components]
        assert kinds[: 1 + 2 * (block.layer_idx + 1)] == [
            "embedding",
            *["attention", "mlp"] * (block.layer_idx + 1),
        ]
        assert ("lens_bias" in kinds) == (kind == "tuned")
    # Block N-1 is the model's own output under every lens: the components as before.
    assert abs(result.targets[0].component_sum - result.targets[0].logit_precap) < 1e-3


def test_the_lenses_decompose_differently(llama: LoadedModel, lenses: dict[str, Path]) -> None:
    """The lens's map is applied: a learned lens's block-0 attribution is not the logit
    lens's."""

    def block0(lens: str) -> list[float]:
        config = AttributionConfig(
            layer_strategy="all", use_chat_template=False, track_tokens=[" Paris"], lens=lens
        )
        return worker.run_sync(attribute_loaded, llama, PROMPT, config).block_attributions[0].logits

    plain = block0("logit")
    for kind in KINDS:
        assert abs(block0(str(lenses[kind]))[0] - plain[0]) > 1e-3


def test_the_gate_counts_a_learned_lens_s_memory(llama: LoadedModel) -> None:
    """A generation (and every other kind) under a learned lens needs the lens's maps too: a
    budget that holds the logit lens's generation refuses the same one under a lens dir."""
    from dataclasses import replace

    from lazarus_mcp.analyses.prompts import encode_prompt
    from lazarus_mcp.runtime import gate, limits
    from lazarus_mcp.schema.generation import GenerationConfig

    d, n = llama.info.hidden_size, llama.info.num_layers
    held = gate.lens_bytes(llama, "/some/lens")
    assert gate.lens_bytes(llama, "logit") == 0 and held == (n + 1) * (d * d + d) * 4
    config = GenerationConfig(layer_strategy="all", max_new_tokens=8, use_chat_template=False)
    count = len(encode_prompt(llama.tokenizer, PROMPT, False).token_ids)
    need = gate.forward_bytes(llama, batch=1, length=count + 8, cells=1, rows=n, taps=n + 1)
    before = limits.current()
    limits.configure(replace(before, memory_budget=need + held // 2))
    try:
        gate.admit([llama], gate.Request("generate", [PROMPT], config))
        lensed = config.model_copy(update={"lens": "/some/lens"})
        with pytest.raises(limits.LimitExceededError, match="this generation needs"):
            gate.admit([llama], gate.Request("generate", [PROMPT], lensed))
    finally:
        limits.configure(before)
