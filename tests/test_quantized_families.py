"""Each verified family as mlx-community ships it: converted and 4-bit quantized by mlx-lm's own
functions. The lens of block N-1 is the model's own output, and every block's lens stays within
a stated distance of the float checkpoint's (4-bit weights change the model, not the lens)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from lazarus_mcp.lens.taps import forward_with_taps
from lazarus_mcp.modeling.families import FAMILIES
from lazarus_mcp.modeling.loading import LoadedModel, _model_classes, load
from lazarus_mcp.runtime import worker
from tests.checkpoints import FAMILY_CONFIGS, build_checkpoint
from tests.family_configs import EXTRA_QUANTIZATION

PROMPT = "The capital of France is Paris . The capital of Japan is"
# Measured on these tiny random models (group size 32): worst |Δp| of any block's lens, 4-bit
# against float, 0.032 (smollm3; most families 0.01-0.03); the last block's lens equals the
# model's own output exactly (0.0).
FLOAT_TOL = 0.1


def convert_4bit(source: Path, target: Path, bits: int | None = 4, mode: str = "affine") -> Path:
    """mlx-lm's conversion: its model class (as lazarus builds it), quantize_model, save
    (``bits=None``: the float conversion, in mlx-lm's weight names)."""
    import json

    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    config = json.loads((source / "config.json").read_text())
    spec = FAMILIES[config["model_type"]]
    classes, _ = _model_classes(spec, config)
    model, config = load_model(
        source, model_config=spec.mlx_overrides(config), get_model_classes=classes
    )
    if bits is not None:
        model, config = quantize_model(model, config, group_size=32, bits=bits, mode=mode)
    target.mkdir(parents=True)
    save_model(target, model)
    save_config(config, target / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    return target


def _lens(loaded: LoadedModel) -> tuple[np.ndarray, float]:
    """Every block's lens probabilities at the last position; |lens(N-1) - own| max."""
    ids = loaded.tokenizer.encode(PROMPT)
    n = loaded.info.num_layers
    captured, final = forward_with_taps(
        loaded.model, ids, list(range(n)), windows=loaded.sliding_windows
    )
    probs = mx.softmax(loaded.head(mx.stack([captured[i] for i in range(n)])), axis=-1)
    own = mx.softmax(final.astype(mx.float32))
    return np.array(probs), float(mx.max(mx.abs(probs[-1] - own)))


CASES = [(f, "affine") for f in sorted(FAMILY_CONFIGS)] + [
    (f, mode) for f, modes in sorted(EXTRA_QUANTIZATION.items()) for mode in modes
]


@pytest.mark.parametrize(("family", "mode"), CASES)
def test_4bit_conversion(tmp_path: Path, family: str, mode: str) -> None:
    source = build_checkpoint(tmp_path / "float", family)
    quantized = worker.run_sync(convert_4bit, source, tmp_path / "q4", 4, mode)
    float_model = worker.run_sync(load, str(source))
    q_model = worker.run_sync(load, str(quantized))
    assert q_model.info.quantization is not None and q_model.info.quantization.bits == 4
    assert q_model.info.quantization.mode == mode
    assert q_model.info.support == "verified"
    assert q_model.info.corrections == float_model.info.corrections
    float_probs, _ = worker.run_sync(_lens, float_model)
    q_probs, last_diff = worker.run_sync(_lens, q_model)
    assert last_diff <= 1e-4
    worst = float(np.abs(q_probs - float_probs).max())
    assert worst <= FLOAT_TOL, worst
