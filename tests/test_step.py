"""Step mode: a prompt fed with the model's KV cache, then one token at a time, gives every
block's residual stream and the model's logits a single forward over the whole sequence gives,
for sliding-window families past their window too; a cache that cannot be masked as the family
prescribes is refused with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache

from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from lazarus_mcp.lens.step import check_steppable, start_steps, step_support
from lazarus_mcp.lens.taps import tapped_forward
from lazarus_mcp.modeling.loading import LoadedModel, load
from lazarus_mcp.runtime import worker
from tests.checkpoints import build_checkpoint
from tests.conftest import PARITY

IDS = [0, 5, 17, 40, 33, 21, 8, 9, 60, 71, 12, 13, 14, 15]  # 14 tokens: past windows of 3-4
TOL = 1e-5  # relative to each array's largest entry: float32 rounding of other matmul shapes


def _steps_against_full(loaded: LoadedModel, windows: dict[int, int] | None = None) -> float:
    """Largest |difference| over every block's output and the logits, prompt of 5 then steps,
    relative to the array's largest entry (residual streams of 250 hold ~3e-5 of rounding)."""
    n = loaded.info.num_layers
    factor = loaded.embedding_factor(None)
    full = tapped_forward(
        loaded.model,
        mx.array([IDS]),
        mx.arange(len(IDS))[None, :, None],
        outputs=range(n),
        embedding_factor=factor,
        windows=loaded.sliding_windows,
    )
    steps = start_steps(
        loaded.model, factor, loaded.sliding_windows if windows is None else windows
    )
    fed = [steps.feed(IDS[:5], positions=range(5), outputs=range(n))]
    fed += [steps.feed([t], outputs=range(n)) for t in IDS[5:]]
    assert steps.offset == len(IDS)
    pairs = [(full.logits, mx.concatenate([f.logits for f in fed], axis=1))]
    pairs += [
        (full.outputs[i], mx.concatenate([f.outputs[i] for f in fed], axis=1)) for i in range(n)
    ]
    return max(
        float(mx.max(mx.abs(a.astype(mx.float32) - b.astype(mx.float32))) / mx.max(mx.abs(a)))
        for a, b in pairs
    )


@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma2", "gemma3-text", "mistral"])
def test_steps_equal_the_full_forward_on_parity_checkpoints(name: str) -> None:
    loaded = worker.run_sync(load, str(PARITY / name))
    assert worker.run_sync(_steps_against_full, loaded) <= TOL


# Windows of 3-4 tokens: a rotating cache (gemma3, olmo3, cohere2, gpt_oss), a full cache the
# port masks without the window (gemma2, starcoder2), state-space caches (qwen3_next, lfm2).
STEP_FAMILIES = [
    "gemma2",
    "gemma3",
    "olmo3",
    "cohere2",
    "gpt_oss",
    "starcoder2",
    "qwen3_next",
    "lfm2",
]


@pytest.mark.parametrize("family", STEP_FAMILIES)
def test_steps_equal_the_full_forward_past_the_window(tmp_path: Path, family: str) -> None:
    loaded = worker.run_sync(load, str(build_checkpoint(tmp_path / family, family)))
    # Qwen3-Next's gated delta rule sums its recurrence in another order over a sequence than
    # step by step (measured 2.4e-5 relative at block 3; 1.6e-6 after its first block).
    tol = 1e-4 if family == "qwen3_next" else TOL
    assert worker.run_sync(_steps_against_full, loaded) <= tol


def test_the_window_masks_matter_on_a_full_cache(tmp_path: Path) -> None:
    """mlx-lm's Gemma 2 caches every key: without the family's window the steps differ."""
    loaded = worker.run_sync(load, str(build_checkpoint(tmp_path / "gemma2", "gemma2")))
    assert loaded.sliding_windows
    assert worker.run_sync(_steps_against_full, loaded, {}) > 1e-3


def test_a_cache_that_disagrees_with_the_windows_is_refused() -> None:
    loaded = worker.run_sync(load, str(PARITY / "gemma3-text"))

    def reasons() -> tuple[Any, ...]:
        cache = make_prompt_cache(loaded.model)
        unwindowed = step_support(loaded.model, cache, {})
        wider = step_support(loaded.model, cache, dict.fromkeys(loaded.sliding_windows, 9))
        with pytest.raises(UnsupportedModelError, match="3 entries for 6 blocks"):
            check_steppable(loaded.model, cache[:3], loaded.sliding_windows)
        return unwindowed, wider, step_support(loaded.model, cache, loaded.sliding_windows)

    unwindowed, wider, fine = worker.run_sync(reasons)
    assert unwindowed is not None and "every earlier token" in unwindowed
    assert wider is not None and "window of 9" in wider
    assert fine is None


def test_feed_checks_its_positions() -> None:
    loaded = worker.run_sync(load, str(PARITY / "llama"))

    def bad() -> None:
        steps = start_steps(loaded.model)
        steps.feed([1, 2, 3], positions=[3])

    with pytest.raises(InvalidRequestError, match="out of range"):
        worker.run_sync(bad)
