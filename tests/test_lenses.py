"""Learned lenses on a real tiny checkpoint: the Jacobian estimator against forward-mode
derivatives, determinism, resume, quantized weights, tuned-lens training, and the LENS_DIR
loader against hostile files. References from other packages are in test_lenses_reference.py."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from lazarus_mcp.lens.head import blocks
from lazarus_mcp.lenses import corpus, jobs
from lazarus_mcp.lenses.jacobian_fit import JacobianSettings, fit_jacobians, perturbed
from lazarus_mcp.lenses.lens_dir import LensFileError, load_lens, save_lens
from lazarus_mcp.lenses.readout import LoadedLens, open_lens, readout
from lazarus_mcp.lenses.tuned_train import TunedRecipe
from lazarus_mcp.modeling.loading import load
from tests.conftest import PARITY

LLAMA = PARITY / "llama"
SKIP = 4


@pytest.fixture(scope="module")
def llama():  # type: ignore[no-untyped-def]
    if not LLAMA.is_dir():
        pytest.skip("the shared parity checkpoints are not present")
    return load(str(LLAMA))


def _prompts(count: int, length: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[0, *rng.integers(3, 400, size=length - 1).tolist()] for _ in range(count)]


def _settings(loaded, **kw) -> JacobianSettings:  # type: ignore[no-untyped-def]
    n = loaded.info.num_layers
    return JacobianSettings(tuple(range(n - 1)), n - 1, skip_first=SKIP, **kw)


def _column_by_jvp(loaded, ids: list[int], layer: int, dim: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Column ``dim`` of one prompt's J_layer, by forward mode: the same tangent e_dim at every
    valid source position, the response summed over valid target positions, over |V|."""
    n, d, length = loaded.info.num_layers, loaded.info.hidden_size, len(ids)
    valid = ((mx.arange(length) >= SKIP) & (mx.arange(length) < length - 1)).astype(mx.float32)
    tangent = valid[None, :, None] * (mx.arange(d) == dim).astype(mx.float32)[None, None, :]
    run = perturbed(loaded.model, [layer], n - 1)
    _, (out,) = mx.jvp(
        lambda delta: run(mx.array([ids]), [delta]), [mx.zeros((1, length, d))], [tangent]
    )
    col = (out[0] * valid[:, None]).sum(axis=0) / float(length - 1 - SKIP)
    return np.array(col)


def test_jacobian_rows_match_forward_mode_columns(llama) -> None:  # type: ignore[no-untyped-def]
    ids = _prompts(1, 24)[0]
    matrices, state = fit_jacobians(
        llama.model, [ids], _settings(llama, dim_batch=16), llama.info.hidden_size
    )
    assert state.n_done == 1
    for layer, dim in ((0, 3), (2, 40), (4, 63)):
        column = _column_by_jvp(llama, ids, layer, dim)
        np.testing.assert_allclose(matrices[layer][:, dim], column, rtol=1e-4, atol=1e-5)
    # The Jacobian of a real block stack is not the identity: the lens is not the logit lens.
    assert np.abs(matrices[0] - np.eye(64)).max() > 0.05


def test_fit_is_deterministic_and_resumes(llama, tmp_path) -> None:  # type: ignore[no-untyped-def]
    prompts = [*_prompts(3, 20), [0, 5, 6]]  # the last is too short: skipped, not counted
    settings = _settings(llama, dim_batch=32)
    d = llama.info.hidden_size
    whole, state = fit_jacobians(llama.model, prompts, settings, d)
    assert (state.n_done, state.skipped) == (3, 1)
    again, _ = fit_jacobians(llama.model, prompts, settings, d)
    assert all(np.array_equal(whole[k], again[k]) for k in whole)

    class Stop(Exception):
        pass

    def stop_after_first(progress) -> None:  # type: ignore[no-untyped-def]
        if progress.prompt >= 1 and progress.rows == d:
            raise Stop

    checkpoint = tmp_path / "ckpt"
    with pytest.raises(Stop):
        fit_jacobians(
            llama.model, prompts, settings, d, checkpoint=checkpoint, on_progress=stop_after_first
        )
    assert json.loads((checkpoint / "state.json").read_text())["n_done"] == 1
    resumed, state = fit_jacobians(llama.model, prompts, settings, d, checkpoint=checkpoint)
    assert state.n_done == 3
    for k in whole:
        np.testing.assert_allclose(resumed[k], whole[k], rtol=1e-6, atol=1e-7)


def test_fit_through_quantized_weights() -> None:
    """Quantized weights are constants: the fit differentiates the quantized model itself
    (checked against its own forward-mode derivatives), through the path without vmap."""
    if not LLAMA.is_dir():
        pytest.skip("the shared parity checkpoints are not present")
    loaded = load(str(LLAMA))
    for block in blocks(loaded.model):
        nn.quantize(block, group_size=32, bits=4)
    assert isinstance(blocks(loaded.model)[1].mlp.gate_proj, nn.QuantizedLinear)
    ids = _prompts(1, 20)[0]
    matrices, _ = fit_jacobians(loaded.model, [ids], _settings(loaded), loaded.info.hidden_size)
    for layer, dim in ((0, 7), (3, 50)):
        column = _column_by_jvp(loaded, ids, layer, dim)
        np.testing.assert_allclose(matrices[layer][:, dim], column, rtol=1e-4, atol=1e-5)


def test_zero_translator_is_the_logit_lens(llama) -> None:  # type: ignore[no-untyped-def]
    d = llama.info.hidden_size
    zero = LoadedLens("tuned", {2: mx.zeros((d, d))}, {2: mx.zeros((d,))})
    eye = LoadedLens("jacobian", {2: mx.eye(d)}, {})
    h = mx.random.normal((3, d), key=mx.random.key(1))
    logit = readout(llama.head, h, 2, None)
    assert mx.array_equal(readout(llama.head, h, 2, zero), logit)
    np.testing.assert_allclose(
        np.array(readout(llama.head, h, 2, eye)), np.array(logit), rtol=1e-6, atol=1e-5
    )


def test_train_tuned_beats_the_logit_lens_and_round_trips(llama, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seqs = corpus.sample_sequences(llama.model, 10, 24, 0, seed=3)
    assert seqs == corpus.sample_sequences(llama.model, 10, 24, 0, seed=3)
    out = tmp_path / "tuned"
    lens = jobs.train_tuned_lens(
        llama, seqs[:8], out, TunedRecipe(steps=30, batch_sequences=2), held=seqs[8:]
    )
    held = lens.config.held_out
    assert held is not None and held.layers == list(range(llama.info.num_layers - 1))
    assert sum(held.lens_kl) < 0.95 * sum(held.logit_kl)
    again = load_lens(out)
    assert again.config.kind == "tuned" and again.config.embedding
    np.testing.assert_array_equal(again.weights[3], lens.weights[3])
    assert not (out / ".train-checkpoint").exists()
    opened = open_lens(out, llama)
    assert opened.maps(0) and opened.maps(None) and not opened.maps(llama.info.num_layers - 1)


# ---- LENS_DIR against hostile files -------------------------------------------------------


@pytest.fixture()
def lens_dir(llama, tmp_path) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path / "lenses" / "j"
    settings = JacobianSettings((0, 1), llama.info.num_layers - 1, skip_first=SKIP)
    jobs.fit_jacobian_lens(llama, _prompts(1, 20), out, settings)
    return out


def _rewrite_header(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    edit(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob[8 + n :])


def _one_line_refusal(path: Path, match: str, **kw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LensFileError, match=match) as info:
        load_lens(path, **kw)
    assert "\n" not in str(info.value)


def test_round_trip(lens_dir: Path) -> None:
    lens = load_lens(lens_dir)
    assert lens.config.kind == "jacobian" and lens.config.layers == [0, 1]
    assert lens.weights[0].shape == (64, 64) and lens.weights[0].dtype == np.float32


def test_header_that_lies_about_a_shape(lens_dir: Path) -> None:
    def grow(header: dict) -> None:  # type: ignore[type-arg]
        header["jacobian.0"]["shape"] = [640, 640]

    _rewrite_header(lens_dir / "lens.safetensors", grow)
    _one_line_refusal(lens_dir, "header lies")


def test_header_that_claims_more_bytes_than_the_file(lens_dir: Path) -> None:
    path = lens_dir / "lens.safetensors"
    blob = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**62) + blob[8:])
    _one_line_refusal(lens_dir, "the file lies")


def test_header_with_overlapping_ranges(lens_dir: Path) -> None:
    def overlap(header: dict) -> None:  # type: ignore[type-arg]
        header["jacobian.1"]["data_offsets"] = header["jacobian.0"]["data_offsets"]

    _rewrite_header(lens_dir / "lens.safetensors", overlap)
    _one_line_refusal(lens_dir, "overlap|does not account")


def test_wrong_shapes(lens_dir: Path) -> None:
    lens = load_lens(lens_dir)
    lens.weights[1] = np.zeros((64, 32), np.float32)
    save_lens(lens_dir, lens)
    _one_line_refusal(lens_dir, r"jacobian.1 has shape \[64, 32\], expected \[64, 64\]")


def test_nan_weights(lens_dir: Path) -> None:
    lens = load_lens(lens_dir)
    lens.weights[0][3, 5] = math.nan
    save_lens(lens_dir, lens)
    _one_line_refusal(lens_dir, "NaN or infinite")


def test_config_naming_a_layer_that_is_missing(lens_dir: Path) -> None:
    config = json.loads((lens_dir / "config.json").read_text())
    config["layers"] = [0, 1, 2]
    (lens_dir / "config.json").write_text(json.dumps(config))
    _one_line_refusal(lens_dir, "missing jacobian.2")


def test_lens_for_another_model(lens_dir: Path, llama) -> None:  # type: ignore[no-untyped-def]
    config = json.loads((lens_dir / "config.json").read_text())
    config["model"]["num_layers"] = 7
    (lens_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(LensFileError, match="made for another model"):
        open_lens(lens_dir, llama)
    config["model"]["num_layers"] = 6
    config["model"]["norm_probe"] = [v * 1.5 for v in config["model"]["norm_probe"]]
    (lens_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(LensFileError, match="final norm's weights differ"):
        open_lens(lens_dir, llama)


def test_path_outside_the_allowed_dir(lens_dir: Path, tmp_path: Path) -> None:
    allowed = tmp_path / "lenses"
    assert load_lens("j", allowed=allowed).config.kind == "jacobian"
    _one_line_refusal(Path("../lenses/j"), "outside the allowed", allowed=allowed / "sub")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (allowed / "link").symlink_to(outside)
    _one_line_refusal(Path("link"), "outside the allowed", allowed=allowed)
    (lens_dir / "lens.safetensors").unlink()
    (lens_dir / "lens.safetensors").symlink_to("/dev/zero")
    _one_line_refusal(lens_dir, "points outside it")


def test_not_a_regular_file(lens_dir: Path) -> None:
    (lens_dir / "lens.safetensors").unlink()
    (lens_dir / "lens.safetensors").mkdir()
    _one_line_refusal(lens_dir, "not a regular file")


def test_prompts_file_must_be_a_regular_utf8_file(tmp_path: Path) -> None:
    from lazarus_mcp.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="not a regular file"):
        corpus.read_prompts(Path("/dev/zero"))
    bad = tmp_path / "p.txt"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidRequestError, match="UTF-8"):
        corpus.read_prompts(bad)


def test_components_still_sum_under_a_linear_lens(llama) -> None:  # type: ignore[no-untyped-def]
    """Direct logit attribution under a tuned or Jacobian lens: each component through the
    linear part, the bias one more component; they sum to the lens's transform of the sum.
    (The whole attribution under a lens: test_lenses_everywhere.py.)"""
    from lazarus_mcp.lens.decompose import through_lens
    from lazarus_mcp.lenses.readout import LensReader

    d = llama.info.hidden_size
    key = mx.random.key(7)
    k1, k2, k3 = mx.random.split(key, 3)
    tuned = LoadedLens(
        "tuned",
        {3: 0.1 * mx.random.normal((d, d), key=k1)},
        {3: mx.random.normal((d,), key=k2)},
    )
    components = mx.random.normal((5, d), key=k3)
    residual = components.sum(axis=0)
    for lens in (tuned, LoadedLens("jacobian", {3: tuned.weights[3] + mx.eye(d)}, {})):
        parts = through_lens(components, *lens.linear_part(3))
        assert parts.shape[0] == (6 if lens.kind == "tuned" else 5)
        np.testing.assert_allclose(
            np.array(parts.sum(axis=0)), np.array(lens.transform(residual, 3)), atol=1e-4
        )
        # And the logits the seam reads are those of the summed, transformed residual.
        reader = LensReader(llama.head, lens)
        np.testing.assert_allclose(
            np.array(reader.readout(residual, 3)),
            np.array(llama.head(parts.sum(axis=0))),
            atol=1e-4,
        )
    assert LensReader(llama.head).describe() == {"kind": "logit", "path": None, "fit": None}


def test_lens_directories_through_the_seam(lens_dir: Path, llama, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """analyze --lens DIR names the lens in its result; an MCP server reads lenses only under
    --lens-dir, and none without it."""
    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.errors import InvalidRequestError
    from lazarus_mcp.lenses import seam
    from lazarus_mcp.runtime.worker import run_sync
    from lazarus_mcp.schema import AnalysisConfig

    config = AnalysisConfig(layer_strategy="all", use_chat_template=False, lens=str(lens_dir))
    result = run_sync(analyze_loaded, llama, "The capital of France is", config)
    assert (result.lens.kind, result.lens.path) == ("jacobian", str(lens_dir))
    logit = run_sync(analyze_loaded, llama, "The capital of France is", AnalysisConfig())
    assert logit.lens.kind == "logit" and "lens" not in logit.config.model_dump(
        exclude_defaults=True
    )
    # Its JSON names the logit lens; its config leaves the default out (as positions').
    assert logit.model_dump(mode="json")["lens"] == {"kind": "logit", "path": None, "fit": None}
    assert "lens" not in logit.model_dump(mode="json")["config"]
    # Block N-1 is the model's own output under every lens; block 0 reads differently.
    assert (
        result.layer_predictions[-1].top_k
        == run_sync(
            analyze_loaded,
            llama,
            "The capital of France is",
            AnalysisConfig(layer_strategy="all", use_chat_template=False),
        )
        .layer_predictions[-1]
        .top_k
    )
    try:
        seam.configure(None, required=True)
        with pytest.raises(InvalidRequestError, match="no lens directories"):
            run_sync(analyze_loaded, llama, "x", config)
        seam.configure(tmp_path / "lenses", required=True)
        inside = AnalysisConfig(use_chat_template=False, lens="j")
        assert run_sync(analyze_loaded, llama, "x", inside).lens.kind == "jacobian"
        for outside in ("../other", str(tmp_path)):
            bad = AnalysisConfig(use_chat_template=False, lens=outside)
            with pytest.raises(LensFileError, match="outside the allowed"):
                run_sync(analyze_loaded, llama, "x", bad)
    finally:
        seam.configure(None, required=False)
