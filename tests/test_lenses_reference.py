"""The lenses against their reference implementations (the torch extra): TransformerLens's
``JacobianLens`` (fit and readout) and the ``tuned-lens`` package's ``TunedLens`` readout, on the
parity llama checkpoint, plus the importers' refusals (torch only).

Without torch, transformer-lens or tuned-lens installed the tests that need them are skipped.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.lens.taps import tapped_forward
from lazarus_mcp.lenses.importers import import_lens
from lazarus_mcp.lenses.jacobian_fit import JacobianSettings, fit_jacobians
from lazarus_mcp.lenses.lens_dir import LensFileError, save_lens
from lazarus_mcp.lenses.readout import identity_of, open_lens, readout
from lazarus_mcp.modeling.loading import load
from tests.conftest import PARITY

torch = pytest.importorskip("torch")
LLAMA = PARITY / "llama"
PROMPTS = [
    "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire",
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi",
]
MAX_SEQ_LEN = 40


@pytest.fixture(scope="module")
def llama() -> Any:
    return load(str(LLAMA))


def _probs(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _our_readout(loaded: Any, lens_dir: Path, ids: list[int], layer: int | None) -> np.ndarray:
    """Per-position logits of ``layer`` (None: the embedding output) under the lens."""
    lens = open_lens(lens_dir, loaded)
    n = loaded.info.num_layers
    tapped = tapped_forward(
        loaded.model,
        mx.array([ids]),
        mx.arange(len(ids))[None, :, None],
        outputs=range(n),
        inputs=(0,),
    )
    hidden = tapped.inputs[0] if layer is None else tapped.outputs[layer]
    return np.array(readout(loaded.head, hidden[0], layer, lens))


# ---- TransformerLens's JacobianLens -------------------------------------------------------


@pytest.fixture(scope="module")
def reference_jlens() -> Any:
    pytest.importorskip("transformer_lens")
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.tools.analysis import JacobianLens

    model = TransformerBridge.boot_transformers(str(LLAMA), device="cpu", dtype=torch.float32)
    lens = JacobianLens.fit(
        model, PROMPTS, corpus="test", max_seq_len=MAX_SEQ_LEN, show_progress=False
    )
    tokens = [model.to_tokens(p)[0, :MAX_SEQ_LEN].tolist() for p in PROMPTS]
    return model, lens, tokens


def _tl_logits(model: Any, lens: Any, ids: list[int]) -> dict[int, np.ndarray]:
    result = lens.readout(model, torch.tensor([ids]), return_full_logits=True)
    return {k: v.numpy() for k, v in result.lens_logits.items()}


def test_fit_matches_transformer_lens(llama: Any, reference_jlens: Any, tmp_path: Path) -> None:
    model, reference, tokens = reference_jlens
    n = llama.info.num_layers
    settings = JacobianSettings(tuple(range(n - 1)), n - 1, max_seq_len=MAX_SEQ_LEN)
    ours, state = fit_jacobians(llama.model, tokens, settings, llama.info.hidden_size)
    assert state.n_done == reference.n_prompts == 2
    for layer in range(n - 1):
        theirs = reference.jacobians[layer].numpy()
        rel = np.linalg.norm(ours[layer] - theirs) / np.linalg.norm(theirs)
        assert rel < 1e-3, (layer, rel)
    # The readout of our fitted lens against TransformerLens's readout of its own fit.
    from lazarus_mcp.lenses.jobs import fit_jacobian_lens

    out = tmp_path / "fitted"
    fit_jacobian_lens(llama, tokens, out, settings)
    expected = _tl_logits(model, reference, tokens[0])
    for layer in range(n - 1):
        got = _probs(_our_readout(llama, out, tokens[0], layer))
        assert np.abs(got - _probs(expected[layer])).max() < 2e-3


def test_imported_artifact_reads_as_transformer_lens_reads_it(
    llama: Any, reference_jlens: Any, tmp_path: Path
) -> None:
    model, reference, tokens = reference_jlens
    artifact = tmp_path / "lens.pt"
    reference.save(str(artifact))  # float16, as the published lenses
    out = tmp_path / "imported"
    save_lens(out, import_lens(artifact, identity_of(llama)))
    expected = _tl_logits(model, reference.load(str(artifact)), tokens[1])
    for layer in range(llama.info.num_layers - 1):
        got = _probs(_our_readout(llama, out, tokens[1], layer))
        assert np.abs(got - _probs(expected[layer])).max() < 1e-4
    # Through the analysis itself (``analyze --lens``), at the last position.
    result = _analyze(llama, model.tokenizer.decode(tokens[1][1:]), out)
    assert result.token_ids == tokens[1] and result.lens.kind == "jacobian"
    for row in result.layer_predictions[:-1]:
        want = _probs(expected[row.layer_idx][-1])
        for token in row.top_k:
            assert abs(token.probability - want[token.token_id]) < 1e-4


def _analyze(loaded: Any, prompt: str, lens_dir: Path, **kw: Any) -> Any:
    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.runtime.worker import run_sync
    from lazarus_mcp.schema import AnalysisConfig

    config = AnalysisConfig(
        layer_strategy="all", top_k=25, use_chat_template=False, lens=str(lens_dir), **kw
    )
    return run_sync(analyze_loaded, loaded, prompt, config)


# ---- tuned-lens's TunedLens ---------------------------------------------------------------


def test_imported_tuned_lens_reads_as_tuned_lens_reads_it(llama: Any, tmp_path: Path) -> None:
    pytest.importorskip("tuned_lens")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tuned_lens import model_surgery
    from tuned_lens.nn.lenses import TunedLens

    # tuned-lens 0.2.0 probes for TransformerLens 3's HookedTransformer, which TransformerLens 4
    # (installed beside it for the J-lens references) refuses to hand out; it is not used here.
    model_surgery._transformer_lens_available = False

    hf = AutoModelForCausalLM.from_pretrained(str(LLAMA), dtype=torch.float32).eval()
    lens = TunedLens.from_model(hf)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for translator in lens:
            translator.weight.normal_(0, 0.05, generator=generator)
            translator.bias.normal_(0, 0.05, generator=generator)
    src = tmp_path / "tuned-lens"
    lens.save(src)
    out = tmp_path / "imported"
    save_lens(out, import_lens(src, identity_of(llama)))

    ids = AutoTokenizer.from_pretrained(str(LLAMA))(PROMPTS[0])["input_ids"][:MAX_SEQ_LEN]
    with torch.no_grad():
        hidden = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states
        expected = {
            None if i == 0 else i - 1: _probs(lens(hidden[i], idx=i)[0].float().numpy())
            for i in range(llama.info.num_layers)  # 0: embeddings; i: block i - 1
        }
    for layer, probs in expected.items():
        got = _our_readout(llama, out, ids, layer)
        assert np.abs(_probs(got) - probs).max() < 1e-4, layer

    # Through the analysis itself (``analyze --lens``): every row's top-k probabilities.
    prompt = AutoTokenizer.from_pretrained(str(LLAMA)).decode(ids, skip_special_tokens=True)
    result = _analyze(llama, prompt, out, include_embeddings=True)
    assert result.token_ids == ids
    assert result.lens.kind == "tuned" and result.lens.path == str(out)
    last = llama.info.num_layers - 1
    for row in result.layer_predictions:
        if row.layer_idx == last:
            continue
        want = expected[row.layer_idx][-1]
        for token in row.top_k:
            assert abs(token.probability - want[token.token_id]) < 1e-4, row.layer_idx


# ---- importers' refusals (torch only) -----------------------------------------------------


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/lazarus-lens-payload-ran",))


def test_pickle_with_a_payload_is_refused_unrun(llama: Any, tmp_path: Path) -> None:
    marker = Path("/tmp/lazarus-lens-payload-ran")
    marker.unlink(missing_ok=True)
    artifact = tmp_path / "evil.pt"
    with open(artifact, "wb") as f:
        pickle.dump({"J": {0: _Payload()}, "d_model": 64}, f)
    with pytest.raises(LensFileError, match=r"refused evil\.pt") as info:
        import_lens(artifact, identity_of(llama))
    assert "\n" not in str(info.value)
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "config.json").write_text('{"d_model": 64, "num_hidden_layers": 6}')
    torch.save({"0.weight": _Payload()}, tuned / "params.pt")
    with pytest.raises(LensFileError, match=r"refused params\.pt"):
        import_lens(tuned, identity_of(llama))
    assert not marker.exists()


def test_mismatched_artifacts_are_refused(llama: Any, tmp_path: Path) -> None:
    identity = identity_of(llama)
    cases = {
        "wrong_d": ({"J": {0: torch.zeros(32, 32)}, "d_model": 32}, "d_model 32"),
        "bad_shape": ({"J": {0: torch.zeros(64, 60)}, "d_model": 64}, "shape"),
        "bad_layer": ({"J": {5: torch.eye(64)}, "d_model": 64}, "outside this model"),
        "target": (
            {"J": {0: torch.eye(64)}, "d_model": 64, "metadata": {"target_layer": 3}},
            "fitted against block 3",
        ),
        "nan": ({"J": {0: torch.full((64, 64), float("nan"))}, "d_model": 64}, "NaN"),
    }
    for name, (payload, match) in cases.items():
        torch.save(payload, tmp_path / f"{name}.pt")
        with pytest.raises(LensFileError, match=match):
            import_lens(tmp_path / f"{name}.pt", identity)
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "config.json").write_text('{"d_model": 64, "num_hidden_layers": 12}')
    torch.save({}, tuned / "params.pt")
    with pytest.raises(LensFileError, match="12 blocks"):
        import_lens(tuned, identity)
