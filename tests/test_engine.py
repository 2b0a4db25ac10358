"""One engine: the same forward gives bitwise the same statistics whichever analysis asks
(``last``, ``[-1]``, a grid's column); a batch member equals its single run within 1e-6; a lens
plugged in at the one seam changes every analysis alike; milestones read every block."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.analyses.attribution import attribute_loaded
from lazarus_mcp.analyses.batch import analyze_many
from lazarus_mcp.analyses.compare import compare_loaded
from lazarus_mcp.lens import cells, readout
from lazarus_mcp.lens.head import LensHead
from lazarus_mcp.lens.readout import Lens, TranslatorLens
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.runtime import limits, worker
from lazarus_mcp.schema import AnalysisConfig, AttributionConfig, LayerStrategy
from tests.conftest import PARITY

PROMPT = "The capital of France is"
OTHERS = ["Hi", "Once upon a time, in a land far away, there lived a dragon who"]
CHECKPOINTS = ["demo", "llama", "gemma2", "qwen3", "gemma3-text"]


def _load(name: str) -> LoadedModel:
    return worker.run_sync(load, name if name == "demo" else str(PARITY / name))


def _single_tokens(loaded: LoadedModel) -> list[str]:
    """Two tracked strings that are single tokens of this vocabulary."""
    text = loaded.token_text
    return [text(i) for i in (7, 40) if loaded.token_text.resolve(text(i)).token_id == i]


def _config(loaded: LoadedModel, **extra: Any) -> AnalysisConfig:
    return AnalysisConfig(
        layer_strategy=LayerStrategy.ALL,
        use_chat_template=False,
        top_k=8,
        track_tokens=_single_tokens(loaded),
        **extra,
    )


def _analyze(loaded: LoadedModel, prompt: str, config: AnalysisConfig) -> Any:
    return worker.run_sync(analyze_loaded, loaded, prompt, config)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_last_and_minus_one_are_bitwise_equal_and_a_batch_member_within_1e6(name: str) -> None:
    loaded = _load(name)
    config = _config(loaded)
    last = _analyze(loaded, PROMPT, config)
    minus = _analyze(loaded, PROMPT, config.model_copy(update={"positions": [-1]}))
    assert last.layer_predictions == minus.layer_predictions  # floats compared exactly
    assert last.token_evolutions == minus.token_evolutions
    assert last.final_prediction == minus.final_prediction
    assert last.fidelity == minus.fidelity
    assert last.milestones == minus.milestones
    assert minus.grid is not None and minus.grid[0].layer_predictions == last.layer_predictions
    prompts = [OTHERS[0], PROMPT, OTHERS[1]]  # 3, 6 and 39 tokens with llama's tokenizer
    batch = worker.run_sync(analyze_many, loaded, prompts, config)
    for prompt, member in zip(prompts, batch, strict=True):
        _within_1e6(member, last if prompt == PROMPT else _analyze(loaded, prompt, config))


def _within_1e6(member: Any, single: Any) -> None:
    assert member.token_ids == single.token_ids
    # The statistics add nothing, and neither does the padded forward: a row of a float32
    # product no longer depends on the matrix's height or width (accel/blas.py's sgemm floor
    # over MKL). Before it, MKL moved a batch member's probabilities by up to 2.1e-6 (qwen3;
    # llama 1.9e-6) and its entropies by 8.1e-6 (llama); now it is bitwise on every parity
    # family, as with MLX's reference BLAS. 1e-6 is the promise.
    for a, b in zip(member.layer_predictions, single.layer_predictions, strict=True):
        assert a.top_token_id == b.top_token_id
        assert abs(a.entropy - b.entropy) <= 4e-6
        assert abs(a.kl_divergence - b.kl_divergence) <= 4e-6
        assert abs(a.top_probability - b.top_probability) <= 1e-6
    for a, b in zip(member.token_evolutions, single.token_evolutions, strict=True):
        for sa, sb in zip(a.layers, b.layers, strict=True):
            assert abs(sa.probability - sb.probability) <= 1e-6


class _Translator(TranslatorLens):
    """A translator lens ``head(h + mix * roll(h))`` (a norm would undo a mere scale); mix 0 is
    the identity translator."""

    def __init__(self, head: LensHead, mix: float, width: int) -> None:
        super().__init__(head)
        self.mix = mix
        self.head_width = width

    def translate(self, hidden: mx.array, layer: int | None) -> mx.array:
        if not self.mix:
            return mx.array(hidden)
        return hidden + self.mix * mx.roll(hidden, 1, axis=-1)

    def linear_part(self, layer: int | None) -> tuple[mx.array | None, mx.array | None]:
        if not self.mix:
            return None, None
        eye = mx.eye(self.head_width, dtype=mx.float32)
        return eye + self.mix * mx.roll(eye, 1, axis=0), None


class _LensConfig(AnalysisConfig):
    lens: str = "logit"


class _LensAttribution(AttributionConfig):
    lens: str = "logit"


@pytest.fixture
def translators(monkeypatch: pytest.MonkeyPatch) -> None:
    def translator(mix: float) -> Any:
        return lambda m: _Translator(m.head, mix, m.info.hidden_size)

    monkeypatch.setitem(readout.LENSES, "identity", translator(0.0))
    monkeypatch.setitem(readout.LENSES, "mixing", translator(0.5))


def _without_config(result: Any) -> dict[str, Any]:
    dumped = result.model_dump(mode="json")
    dumped.pop("config", None)
    # The result names its lens (compare: per side); the numbers must not differ.
    for part in (dumped, dumped.get("a") or {}, dumped.get("b") or {}):
        part.pop("lens", None)
    return dumped  # type: ignore[no-any-return]


def _every_analysis(loaded: LoadedModel, lens: str) -> dict[str, Any]:
    base = _config(loaded).model_dump()
    config = _LensConfig(**base, lens=lens)
    grid = _LensConfig(**{**base, "positions": "all", "include_embeddings": True}, lens=lens)
    attribution = _LensAttribution(**{**base, "track_tokens": []}, lens=lens)
    return {
        "last": _without_config(_analyze(loaded, PROMPT, config)),
        "grid": _without_config(_analyze(loaded, PROMPT, grid)),
        "batch": [
            _without_config(r)
            for r in worker.run_sync(analyze_many, loaded, [PROMPT, *OTHERS], config)
        ],
        "attribute": _without_config(
            worker.run_sync(attribute_loaded, loaded, PROMPT, attribution)
        ),
        "compare": _without_config(
            worker.run_sync(compare_loaded, loaded, loaded, PROMPT, OTHERS[1], config)
        ),
    }


@pytest.mark.usefixtures("translators")
@pytest.mark.parametrize("name", ["llama", "gemma3-text"])
def test_an_identity_translator_lens_equals_the_logit_lens_everywhere(name: str) -> None:
    loaded = _load(name)
    assert _every_analysis(loaded, "identity") == _every_analysis(loaded, "logit")


@pytest.mark.usefixtures("translators")
def test_another_lens_changes_every_analysis_alike() -> None:
    loaded = _load("llama")
    logit = _every_analysis(loaded, "logit")
    mixed = _every_analysis(loaded, "mixing")
    last = loaded.info.num_layers - 1

    def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
        return result["layer_predictions"]  # type: ignore[no-any-return]

    # Every block but the last reads through the lens; block N-1 stays the model's own output.
    for a, b in zip(rows(mixed["last"]), rows(logit["last"]), strict=True):
        assert (a == b) == (a["layer_idx"] == last), a["layer_idx"]
    assert mixed["last"]["final_prediction"] == logit["last"]["final_prediction"]
    assert mixed["last"]["fidelity"]["max_abs_prob_diff"] > 1e-4  # the lens is checked
    # The same rows wherever they are read: the grid's last column, a batch member, attribute
    # (equal within 1e-6 whatever the matrix shapes: accel/blas.py's sgemm floor), compare.
    _close_rows(mixed["grid"]["grid"][-1]["layer_predictions"][1:], rows(mixed["last"]))
    _close_rows(rows(mixed["batch"][0]), rows(mixed["last"]))
    _close_rows(rows(mixed["attribute"]), rows(mixed["last"]))
    tops = [layer["top_a"]["probability"] for layer in mixed["compare"]["layers"]]
    np.testing.assert_allclose(tops, [r["top_probability"] for r in rows(mixed["last"])], atol=1e-6)
    assert mixed["compare"]["a"]["fidelity"] == mixed["last"]["fidelity"]
    assert mixed["grid"]["grid"][-1]["layer_predictions"][1:] != rows(logit["last"])
    # Attribution decomposes the lens's reading of each block through its linear map.
    for block, plain in zip(
        mixed["attribute"]["block_attributions"],
        logit["attribute"]["block_attributions"],
        strict=True,
    ):
        sums = np.sum([c["logits"] for c in block["components"]], axis=0)
        np.testing.assert_allclose(sums, block["logits"], rtol=1e-4, atol=1e-4)
        assert block["logits"] != plain["logits"]


def _close_rows(got: list[dict[str, Any]], want: list[dict[str, Any]], tol: float = 1e-6) -> None:
    assert [r["layer_idx"] for r in got] == [r["layer_idx"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert a["top_token_id"] == b["top_token_id"], a["layer_idx"]
        assert abs(a["top_probability"] - b["top_probability"]) <= tol, a["layer_idx"]
        assert abs(a["entropy"] - b["entropy"]) <= 4 * tol * max(1.0, b["entropy"])


def test_an_unknown_lens_is_refused() -> None:
    loaded = _load("llama")
    with pytest.raises(Exception, match="unknown lens 'tuned'"):
        _analyze(loaded, PROMPT, _LensConfig(lens="tuned"))


def test_milestones_read_every_block_whatever_is_displayed() -> None:
    """The demo's evenly spaced layers are 0, 4, 5; ' Paris' leads from block 1."""
    loaded = _load("demo")
    spaced = _analyze(loaded, PROMPT, AnalysisConfig())
    every = _analyze(loaded, PROMPT, AnalysisConfig(layer_strategy=LayerStrategy.ALL))
    assert spaced.captured_layers == [0, 4, 5]
    assert spaced.milestones == every.milestones
    assert spaced.milestones.final_token == " Paris"
    assert spaced.milestones.rank_1_layer == 1
    assert [c.layer_idx for c in spaced.milestones.top1_changes] == [1]
    grid = _analyze(loaded, PROMPT, AnalysisConfig(positions="all", include_embeddings=True))
    assert grid.milestones == every.milestones
    attribution = worker.run_sync(
        attribute_loaded, loaded, PROMPT, AttributionConfig(custom_layers=[0, 5])
    )
    assert attribution.milestones == every.milestones
    compared = worker.run_sync(
        compare_loaded, loaded, loaded, PROMPT, PROMPT, AnalysisConfig(custom_layers=[5])
    )
    assert compared.a.milestones == every.milestones


class _Counting(Lens):
    """A plain linear lens that cancels its job on its first projection."""

    def __init__(self, weight: mx.array, job: limits.Interrupt) -> None:
        self.weight = weight
        self.job = job
        self.calls = 0

    def readout(self, hidden: mx.array, layer: int | None) -> mx.array:
        self.calls += 1
        self.job.cancel()
        return hidden @ self.weight


def test_the_cell_statistics_stop_between_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call past its deadline stops within a chunk: one cell per chunk, cancelled during
    the first, so the second never starts."""
    rng = np.random.default_rng(0)
    weight = mx.array(rng.standard_normal((8, 50)).astype(np.float32))
    hidden: dict[int | None, mx.array] = {0: mx.array(rng.standard_normal((6, 8)), mx.float32)}
    own = mx.array(rng.standard_normal((6, 50)).astype(np.float32))
    monkeypatch.setattr(cells, "CHUNK_BYTES", 1)
    job = limits.Interrupt.after(None)
    lens = _Counting(weight, job)
    spec = cells.CellSpec(lens, [0, 1], last=1, top_k=3)
    whole = cells.cell_stats(spec, hidden, own)  # no job on this thread: runs to the end
    assert whole.num_cells == 6 and lens.calls == 6
    lens.calls = 0
    lens.job = job = limits.Interrupt.after(None)  # the first run cancelled the other one
    limits.set_interrupt(job)
    try:
        with pytest.raises(limits.CallInterrupted):
            cells.cell_stats(spec, hidden, own)
    finally:
        limits.set_interrupt(None)
    assert lens.calls == 1
