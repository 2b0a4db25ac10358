"""The grid's cell statistics: the fused kernel against numpy's reference, on the same chunks.

Runs the benchmark's grid (every block at every position of a 128-token prompt, top-5) once,
keeps the [L, chunk, V] logits each chunk handed to ``lens.cells.statistics``, then times
``fused_statistics`` and ``reference_statistics`` on those same chunks, alternating run by
run, and checks that they agree (top-k ids and ranks equal, probabilities within 1e-6).

    python examples/bench_cell_stats.py [MODEL] [--tokens 128] [--runs 3]

MODEL defaults to the benchmark's bfloat16 checkpoint (``~/.cache/lazarus-bench/tinyllama-bf16``,
made by ``examples/benchmark.py``). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_model import prompt  # noqa: E402

DEFAULT = Path.home() / ".cache" / "lazarus-bench" / "tinyllama-bf16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(DEFAULT))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from lazarus_mcp.runtime.process import prepare_process

    prepare_process()  # the BLAS before MLX
    import numpy as np

    from lazarus_mcp.accel import cell_stats as fused
    from lazarus_mcp.analyses.analysis import analyze_loaded
    from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy
    from lazarus_mcp.lens import cells
    from lazarus_mcp.modeling.loading import load

    if not fused.available():
        raise SystemExit(f"the statistics kernel is unavailable: {fused.status().reason}")
    loaded = load(args.model)
    config = AnalysisConfig(
        layer_strategy=LayerStrategy.ALL, top_k=5, use_chat_template=False, positions="all"
    )
    chunks: list[tuple[Any, ...]] = []
    original = cells.statistics

    def keep(*call: Any) -> Any:
        chunks.append(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in call))
        return original(*call)

    analyze_loaded(loaded, prompt(8), config)  # warm-up
    cells.statistics = keep  # type: ignore[assignment]
    began = time.perf_counter()
    analyze_loaded(loaded, prompt(args.tokens), config)
    grid = time.perf_counter() - began
    cells.statistics = cells.reference_statistics  # type: ignore[assignment]
    began = time.perf_counter()
    analyze_loaded(loaded, prompt(args.tokens), config)
    grid_numpy = time.perf_counter() - began
    cells.statistics = original  # type: ignore[assignment]
    shape = chunks[0][0].shape
    cells_total = sum(c[0].shape[1] for c in chunks)
    print(
        f"{args.model}: the whole grid of {args.tokens} tokens in {grid:.2f} s with the fused "
        f"statistics, {grid_numpy:.2f} s with numpy's (one run each); {len(chunks)} chunks of "
        f"[rows, cells, vocab] = {list(shape)}, {cells_total} cells"
    )
    timings: dict[str, list[float]] = {"fused": [], "numpy": []}
    functions = {"fused": cells.fused_statistics, "numpy": cells.reference_statistics}
    for _ in range(args.runs):
        for name, function in functions.items():
            began = time.perf_counter()
            for call in chunks:
                function(*call)
            timings[name].append(time.perf_counter() - began)
    for name, values in timings.items():
        print(
            f"{name:6s} statistics of the whole grid: {statistics.median(values):6.3f} s "
            f"(median of {args.runs}: {', '.join(f'{v:.3f}' for v in values)})"
        )
    ratio = statistics.median(timings["numpy"]) / statistics.median(timings["fused"])
    print(f"fused is {ratio:.1f}x faster")
    worst = {"p": 0.0, "entropy": 0.0, "kl": 0.0}
    for call in chunks:
        a, b = cells.fused_statistics(*call), cells.reference_statistics(*call)
        assert np.array_equal(a.top_ids, b.top_ids), "top-k ids differ"
        assert np.array_equal(a.final_top_ranks, b.final_top_ranks), "ranks differ"
        for key, x, y in (("p", a.top_probs, b.top_probs), ("entropy", a.entropy, b.entropy),
                          ("kl", a.kl, b.kl)):  # fmt: skip
            worst[key] = max(worst[key], float(np.abs(x - y).max()))
    print(
        "agreement: top-k ids and ranks equal; worst |dp| {p:.1e}, |d entropy| {entropy:.1e}, "
        "|d KL| {kl:.1e}".format(**worst)
    )
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
