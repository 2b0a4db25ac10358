"""Optional: the lens against PyTorch + transformers on checkpoints built here, with the
config variants that change the forward (sliding windows shorter than the prompt, RoPE bases and
scaling in transformers 5's ``rope_parameters``, per-layer attention types, biases, soft-caps).

Skipped where torch is not installed (``pip install torch==2.13.0`` gives a CPU build).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.checkpoints import build_checkpoint
from tests.parity_check import assert_matches_reference

torch = pytest.importorskip("torch")

PROMPT = "The capital of France is Paris . The capital of Japan is"
ALT = ["sliding_attention", "full_attention"] * 2

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "llama-rope-parameters": (
        "llama",
        {"rope_theta": None, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
    ),
    "llama3-rope-scaling": (
        "llama",
        {
            "rope_theta": None,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    "mistral-window": ("mistral", {"sliding_window": 4}),
    "qwen2-bias": ("qwen2", {}),
    "qwen3-window-layers": (
        "qwen3",
        {
            "use_sliding_window": True,
            "sliding_window": 3,
            "max_window_layers": 2,
            "layer_types": ["full_attention"] * 2 + ["sliding_attention"] * 2,
        },
    ),
    "phi3": ("phi3", {}),
    "phi3-window": ("phi3", {"sliding_window": 5}),
    "olmo2": ("olmo2", {}),
    "gemma": ("gemma", {}),
    "gemma-hidden96": ("gemma", {"hidden_size": 96, "head_dim": 24}),
    "gemma2-window": ("gemma2", {"sliding_window": 4, "layer_types": ALT}),
    "gemma3-window": (
        "gemma3_text",
        {
            "sliding_window": 3,
            "layer_types": ALT,
            "sliding_window_pattern": None,
            "rope_theta": None,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            },
        },
    ),
    "gemma3-hidden96": (
        "gemma3_text",
        {"hidden_size": 96, "head_dim": 24, "query_pre_attn_scalar": 24},
    ),
    "granite": ("granite", {}),
}


def _torch_reference(path: Path, prompt: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        layers = []
        hidden = out.hidden_states
        n = len(hidden) - 1
        cap = getattr(model.config, "final_logit_softcapping", None)
        for i in range(n):
            if i == n - 1:
                logits = out.logits[0, -1]
            else:
                logits = model.lm_head(model.model.norm(hidden[i + 1][:, -1]))[0]
                if getattr(model.config, "logits_scaling", None):
                    logits = logits / model.config.logits_scaling
                if cap:
                    logits = torch.tanh(logits / cap) * cap
            layers.append({"layer_idx": i, "logprobs": torch.log_softmax(logits, -1).tolist()})
    return {
        "input_ids": ids[0].tolist(),
        "tokens": None,
        "layers": layers,
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lens_matches_transformers(tmp_path: Path, variant: str) -> None:
    family, overrides = VARIANTS[variant]
    clean = {k: v for k, v in overrides.items() if v is not None}
    path = build_checkpoint(tmp_path / variant, family, **clean)
    for key in [k for k, v in overrides.items() if v is None]:
        import json

        config = json.loads((path / "config.json").read_text())
        config.pop(key, None)
        (path / "config.json").write_text(json.dumps(config))
    case = _torch_reference(path, PROMPT)
    loaded = worker.run_sync(load, str(path))
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=10, use_chat_template=False)
    result = worker.run_sync(analyze_loaded, loaded, PROMPT, config).model_dump(mode="json")
    case["tokens"] = result["tokens"]
    worst = assert_matches_reference(result, case)
    assert worst < 2e-3
    assert len(result["token_ids"]) > 8  # longer than every sliding window above
    assert np.isfinite(worst)
