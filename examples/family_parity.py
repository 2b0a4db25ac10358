"""Print, per registry family, the worst |Δp| of the lens against transformers over every block,
every token of the vocabulary, raw and chat-templated, for each layout lazarus loads:

- ``hf``: the checkpoint transformers saved (its own weight names and config);
- ``mlx``: the same weights converted by mlx-lm's functions (mlx-lm's names, float32);
- ``mlx-4bit``: that conversion quantized to 4 bits, group size 32 (this one measures the
  quantization, not the lens: its lens of the last block is still the model's own output).

python -m examples.family_parity [FAMILY ...]   (from the repo root; needs torch==2.13.0)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from lazarus_mcp.runtime.process import prepare_process

prepare_process()

from lazarus_mcp.lens.taps import forward_with_taps  # noqa: E402
from lazarus_mcp.modeling.loading import LoadedModel, load  # noqa: E402
from lazarus_mcp.runtime import worker  # noqa: E402
from tests.family_configs import FAMILY_CONFIGS  # noqa: E402
from tests.test_quantized_families import convert_4bit  # noqa: E402
from tests.torch_families import (  # noqa: E402
    PROMPT,
    build_with_transformers,
    chat_ids,
    raw_ids,
    reference_lens,
)


def lens_probs(loaded: LoadedModel, ids: list[int]) -> np.ndarray:
    """[blocks, vocab]: the lens as the core computes it (block N-1: the model's own logits)."""
    n = loaded.info.num_layers
    captured, final = forward_with_taps(
        loaded.model, ids, list(range(n)), windows=loaded.sliding_windows
    )
    probs = mx.softmax(loaded.head(mx.stack([captured[i] for i in range(n - 1)])), axis=-1)
    last = mx.softmax(final.astype(mx.float32))[None]
    return np.array(mx.concatenate([probs, last]), dtype=np.float64)


def family_row(family: str, root: Path) -> dict[str, float]:
    source = root / "hf"
    model = build_with_transformers(source, family)
    layouts = {
        "hf": source,
        "mlx": worker.run_sync(convert_4bit, source, root / "mlx", None),
        "mlx-4bit": worker.run_sync(convert_4bit, source, root / "q4", 4),
    }
    cases = [raw_ids(source, PROMPT), chat_ids(source, PROMPT)]
    refs = [np.exp(np.stack(reference_lens(model, ids))) for ids in cases]
    row = {}
    for name, path in layouts.items():
        loaded = worker.run_sync(load, str(path))
        row[name] = max(
            float(np.abs(worker.run_sync(lens_probs, loaded, ids) - ref).max())
            for ids, ref in zip(cases, refs, strict=True)
        )
    return row


def main() -> None:
    families = sys.argv[1:] or sorted(FAMILY_CONFIGS)
    print(f"{'family':<12} {'hf':>9} {'mlx':>9} {'mlx-4bit':>9}   (max |Δp| vs transformers)")
    for family in families:
        with tempfile.TemporaryDirectory() as tmp:
            row = family_row(family, Path(tmp))
        print(f"{family:<12} " + " ".join(f"{row[k]:9.1e}" for k in ("hf", "mlx", "mlx-4bit")))


if __name__ == "__main__":
    main()
