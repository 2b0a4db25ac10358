"""Where a lens call's time goes: a profile of one grid, batch or long-prompt lens on the
benchmark's TinyLlama-shaped bfloat16 checkpoint (``bench_model.py``).

    python examples/bench_where.py grid          # every block at every position of 128 tokens
    python examples/bench_where.py batch prompt128 --top 25

After a warm-up call, one call runs under ``cProfile`` on the MLX worker thread (where all of
its work runs), and the functions with the most time of their own are printed. The kernels are
called through ctypes, so their time is the own time of ``cpu_gemm.gemm_*``; MLX's ops are
evaluated lazily, so theirs shows in ``mx.eval`` (``builtins.eval`` of MLX arrays) and in the
``_numpy`` view that evaluates each kernel's input.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_grid import BATCH_TOKENS, GRID_TOKENS, batch_prompts  # noqa: E402
from bench_model import default_dir, make_bf16, prompt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", choices=["grid", "batch", "prompt128", "prompt8"])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--top", type=int, default=18)
    args = parser.parse_args()

    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    import anyio

    from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer
    from lazarus_mcp.runtime import worker

    path = default_dir() / "tinyllama-bf16"
    if not path.exists():
        make_bf16(path)
    last = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5, use_chat_template=False)
    grid = last.model_copy(update={"positions": "all"})

    async def run() -> None:
        analyzer = await ModelAnalyzer.from_pretrained(str(path), dtype=args.dtype)
        calls = {
            "grid": lambda: analyzer.analyze(prompt(GRID_TOKENS), grid),
            "batch": lambda: analyzer.analyze_batch(batch_prompts(), last),
            "prompt128": lambda: analyzer.analyze(prompt(128), last),
            "prompt8": lambda: analyzer.analyze(prompt(BATCH_TOKENS), last),
        }
        for job in args.jobs:
            await calls[job]()  # warm-up
            profile = cProfile.Profile()
            worker.run_sync(profile.enable)
            start = time.perf_counter()
            await calls[job]()
            wall = time.perf_counter() - start
            worker.run_sync(profile.disable)
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
            print(f"== {job} ({args.dtype}): {wall:.2f} s, load average {os.getloadavg()}")
            print(out.getvalue().split("\n\n", 2)[-1])

    anyio.run(run)


if __name__ == "__main__":
    main()
