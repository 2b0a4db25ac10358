"""Architectures outside the registry: served self-checked when the model's own head proves
itself, refused (saying what did not match, or why there is no lens) otherwise."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from lazarus_mcp.analyses.analysis import analyze_loaded
from lazarus_mcp.errors import UnsupportedModelError
from lazarus_mcp.lens.head import build_head
from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.modeling.families import FAMILIES
from lazarus_mcp.modeling.loading import load
from lazarus_mcp.runtime import worker
from lazarus_mcp.schema import AnalysisConfig, LayerStrategy
from tests.checkpoints import build_checkpoint

# MiniCPM divides the last hidden state by hidden_size / dim_model_base before its head: an
# output transform the registry does not know, which the model's own code applies.
MINICPM = {"dim_model_base": 16, "scale_depth": 1.4, "scale_emb": 12.0}


def _minicpm(tmp_path: Path) -> Path:
    assert "minicpm" not in FAMILIES
    return build_checkpoint(tmp_path / "minicpm", "minicpm", **MINICPM)


def test_unregistered_architecture_is_served_self_checked(tmp_path: Path) -> None:
    loaded = worker.run_sync(load, str(_minicpm(tmp_path)))
    assert loaded.info.support == "self-checked"
    assert loaded.info.family == "minicpm"

    def heads() -> tuple[float, float]:
        ids = loaded.tokenizer.encode("The capital of France is")
        captured, final = forward_with_taps(loaded.model, ids, [0, 3])
        own = loaded.head(mx.stack([captured[0], captured[3]]))
        ratio = 64 / 16  # hidden_size / dim_model_base
        explicit = build_head(loaded.model, logit_divisor=ratio)(captured[0][None])[0]
        return (
            float(mx.max(mx.abs(own[1] - final))),
            float(mx.max(mx.abs(own[0] - explicit))),
        )

    last_diff, transform_diff = worker.run_sync(heads)
    assert last_diff <= 1e-4
    assert transform_diff <= 1e-4  # the model's own division reached the intermediate lens
    result = worker.run_sync(
        analyze_loaded,
        loaded,
        "one two three",
        AnalysisConfig(layer_strategy=LayerStrategy.ALL, use_chat_template=False),
    )
    assert result.model.support == "self-checked"
    assert result.layer_predictions[-1].kl_divergence == pytest.approx(0.0, abs=1e-6)


def _broken_module(kind: str) -> types.ModuleType:
    """A llama whose output mixes in more than the last block's residual vector after its last
    block (the input embedding, or the other positions): no lens of that stream is its head."""
    from mlx_lm.models import llama

    class Model(llama.Model):  # type: ignore[misc]
        def __call__(self, inputs: mx.array, cache: Any = None, **kwargs: Any) -> mx.array:
            out = self.model(inputs, cache)
            if kind == "embedding":
                out = out + self.model.embed_tokens(inputs)
            else:
                out = out + mx.mean(out, axis=1, keepdims=True)
            return self.lm_head(out)

    module = types.ModuleType("mlx_lm.models.brokenhead")
    module.Model = Model  # type: ignore[attr-defined]
    module.ModelArgs = llama.ModelArgs  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("embedding", r"self-check failed, the lens of the last block differs.*max \|Δp\|"),
        ("positions", r"self-check failed, its output at the last position depends on other"),
    ],
)
def test_a_broken_head_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, message: str
) -> None:
    monkeypatch.setitem(sys.modules, "mlx_lm.models.brokenhead", _broken_module(kind))
    path = build_checkpoint(tmp_path / "broken", "llama")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "brokenhead"}))
    with pytest.raises(UnsupportedModelError, match=message):
        worker.run_sync(load, str(path))


@pytest.mark.parametrize(
    ("model_type", "extra", "reason"),
    [
        ("mamba", {}, "state-space"),
        ("gemma3n", {}, "parallel residual streams"),
        ("t5", {"is_encoder_decoder": True}, "encoder"),
        ("no_such_arch", {}, "mlx-lm has no model"),
    ],
)
def test_non_residual_architectures_are_refused_with_the_reason(
    tmp_path: Path, model_type: str, extra: dict[str, Any], reason: str
) -> None:
    path = build_checkpoint(tmp_path / "llama", "llama")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **extra, "model_type": model_type}))
    with pytest.raises(UnsupportedModelError, match=reason):
        worker.run_sync(load, str(path))
