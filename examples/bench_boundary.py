"""What the CPU kernels' boundary with MLX costs in a forward pass (``docs/performance.md``).

    python examples/bench_boundary.py            # the benchmark's bfloat16 checkpoint
    python examples/bench_boundary.py --runs 9 --tokens 8 128

The kernels run outside MLX's graph, so each linear layer evaluates its input (``mx.eval``),
hands the kernel a numpy view of it and wraps the kernel's output in a new MLX array. This times
a whole forward of the benchmark's TinyLlama-shaped bfloat16 checkpoint (``bench_model.py``,
made on first use) and, inside it, the parts of every kernel call: the input's evaluation
(which includes the MLX ops that produce it), the numpy view (and any copy it needed), the
checks, the kernel, and the output's copy into MLX. Separately it measures what one ``mx.eval``
round trip costs against the same ops evaluated lazily at once: the price of evaluating inside
the graph rather than at its end. Medians over ``--runs`` forwards after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_model import default_dir, make_bf16, prompt  # noqa: E402


def instrument(cpu_gemm: Any, mx: Any, np: Any, totals: dict[str, float]) -> None:
    """Wrap the boundary's functions so that each part of every call adds to ``totals``."""
    clock = time.perf_counter

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            start = clock()
            try:
                return fn(*args)
            finally:
                totals[name] += clock() - start

        return run

    def numpy_view(array: Any) -> Any:
        start = clock()
        mx.eval(array)
        middle = clock()
        view = np.asarray(array)
        out = np.ascontiguousarray(view)
        totals["eval"] += middle - start
        totals["view"] += clock() - middle
        totals["copies in"] += out is not view
        return out

    cpu_gemm._numpy = numpy_view
    cpu_gemm._check_call = timed("checks", cpu_gemm._check_call)
    cpu_gemm.BF16Weights.check = timed("checks", cpu_gemm.BF16Weights.check)
    lib = cpu_gemm._lib()

    class Lib:  # the kernel alone
        lz_gemm = staticmethod(timed("kernel", lib.lz_gemm))
        lz_gemm_affine = staticmethod(timed("kernel", lib.lz_gemm_affine))

    cpu_gemm._lib = lambda: Lib
    matmul = cpu_gemm.bf16_matmul

    def bf16_matmul(*args: Any) -> Any:
        totals["calls"] += 1
        return timed("matmul", matmul)(*args)

    cpu_gemm.bf16_matmul = bf16_matmul


def eval_round_trip(mx: Any, rows: int, count: int = 1000, repeat: int = 7) -> float:
    """Seconds one ``mx.eval`` adds: ``count`` small ops on [rows, 2048] evaluated one by
    one, against the same ops evaluated once at the end."""
    x = mx.random.normal((rows, 2048))
    mx.eval(x)

    def chain(each: bool) -> float:
        start = time.perf_counter()
        y = x
        for _ in range(count):
            y = y * 0.999 + 0.001
            if each:
                mx.eval(y)
        mx.eval(y)
        return time.perf_counter() - start

    eager = min(chain(True) for _ in range(repeat))  # the least disturbed by other work
    lazy = min(chain(False) for _ in range(repeat))
    return (eager - lazy) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 128])
    args = parser.parse_args()
    path = make_bf16(default_dir() / "tinyllama-bf16")

    from lazarus_mcp.runtime import worker

    def measure() -> None:
        import mlx.core as mx
        import numpy as np

        from lazarus_mcp.accel import cpu_gemm
        from lazarus_mcp.modeling.loading import LoadOptions, load

        loaded = load(str(path), LoadOptions())
        print(f"{path} ({loaded.info.matmul}), {args.runs} runs, medians; seconds per forward")
        totals: dict[str, float] = defaultdict(float)
        instrument(cpu_gemm, mx, np, totals)
        for tokens in args.tokens:
            ids = mx.array([loaded.tokenizer.encode(prompt(tokens))])
            runs = []
            for run in range(args.runs + 1):
                totals.clear()
                start = time.perf_counter()
                mx.eval(loaded.model(ids))
                totals["forward"] = time.perf_counter() - start
                inside = sum(totals[key] for key in ("eval", "view", "checks", "kernel"))
                totals["copy out"] = totals["matmul"] - inside
                if run:  # the first is the warm-up
                    runs.append(dict(totals))
            part = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            each = eval_round_trip(mx, tokens)
            sync = each * part["calls"]
            print(
                f"{tokens:4d} tokens: forward {part['forward']:.3f}, "
                f"{part['calls']:.0f} kernel calls: "
                f"kernel {part['kernel']:.3f}, input eval (with the ops before it) "
                f"{part['eval']:.3f}, numpy view {part['view'] * 1e3:.2f} ms "
                f"({part['copies in']:.0f} copies), checks {part['checks'] * 1e3:.2f} ms, "
                f"output copy and the rest {part['copy out'] * 1e3:.1f} ms; "
                f"eval round trips vs lazy: {sync * 1e3:.1f} ms ({each * 1e6:.1f} us each)"
            )

    worker.run_sync(measure)


if __name__ == "__main__":
    main()
