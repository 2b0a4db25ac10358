"""What the sgemm floor (``accel/blas.py``) costs: float32 lens and one-token steps, floor on/off.

    python examples/bench_sgemm_floor.py             # 5 rounds
    python examples/bench_sgemm_floor.py --runs 9

The benchmark's TinyLlama-shaped checkpoint (``bench_model.py``, made on first use) is loaded
converted to float32, so every product goes through MKL's sgemm. In one process, round after
round, the floor is on and off in turn (``blas.without_floor``), so a busy machine slows both
alike: the lens of 8 and 128 tokens (all blocks, top-5, last position) and one-token steps over
the model's KV cache. Prints each median and the on/off ratios, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_model import default_dir, make_bf16, prompt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from lazarus_mcp.runtime.process import prepare_process

    status = prepare_process()
    if status.floor is None or not status.floor[0].isdigit():
        sys.exit(f"no sgemm floor in this process: {status.floor or status.reason}")
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from lazarus_mcp.accel import blas
    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.modeling.loading import load
    from lazarus_mcp.modeling.options import LoadOptions
    from lazarus_mcp.runtime import worker
    from lazarus_mcp.schema import AnalysisConfig, LayerStrategy

    path = make_bf16(default_dir() / "tinyllama-bf16")
    loaded = worker.run_sync(load, str(path), LoadOptions(dtype="float32"))
    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5, use_chat_template=False)

    def floor(off: bool) -> AbstractContextManager[Any]:
        return blas.without_floor() if off else nullcontext()

    def lens(tokens: int, off: bool) -> float:
        text = prompt(tokens)

        def run() -> float:
            with floor(off):
                began = time.perf_counter()
                analyze_loaded(loaded, text, config)
                return time.perf_counter() - began

        return worker.run_sync(run)

    def step(off: bool, count: int = 6) -> float:
        def run() -> float:
            with loaded.scope(), floor(off):
                cache = make_prompt_cache(loaded.model)
                mx.eval(loaded.model(mx.array([[1, 5, 9, 12]]), cache=cache))
                began = time.perf_counter()
                for i in range(count):
                    mx.eval(loaded.model(mx.array([[7 + i]]), cache=cache))
                return (time.perf_counter() - began) / count

        return worker.run_sync(run)

    for off in (False, True):  # warm-up
        lens(8, off)
    times: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for off in (False, True):
            side = "off" if off else "on"
            times.setdefault(f"lens 8 tokens, floor {side}", []).append(lens(8, off))
            times.setdefault(f"lens 128 tokens, floor {side}", []).append(lens(128, off))
            times.setdefault(f"one-token step, floor {side}", []).append(step(off))
    print(f"sgemm floor {status.floor}; load average {os.getloadavg()}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name}: median {medians[name]:.3f} s ({shown})")
    for what in ("lens 8 tokens", "lens 128 tokens", "one-token step"):
        ratio = medians[f"{what}, floor on"] / medians[f"{what}, floor off"]
        print(f"{what}: on/off {ratio:.2f}")


if __name__ == "__main__":
    main()
