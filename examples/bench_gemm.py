"""The matmuls of the lens, kernel by kernel, against the machine's float32 and bfloat16 peaks.

    python examples/bench_gemm.py                 # every shape, best of 3
    python examples/bench_gemm.py --repeat 5 --shapes head batch

For each shape the lens multiplies (the benchmark's TinyLlama-shaped model: hidden 2048, MLP
5632, 4 KV heads of 64, vocab 32000), in the process's threads, it times:

- ``mkl``: MKL's float32 sgemm (through MLX, with the preloaded BLAS) on float32 weights made
  beforehand: what float32-accurate arithmetic reaches when the weights are float32 already;
- ``bf16``: lazarus's bfloat16 kernel with the input rounded (``--dtype bfloat16``): VDPBF16PS;
- ``split``: the same kernel with the input split in two bfloat16 parts (``auto``, few rows);
- ``widened``: float32 FMAs on the bfloat16 weights widened in registers (``auto``, many rows);
- ``exact``: what ``--dtype auto`` runs for that shape (``dispatch``).

and the peaks: the core's own, float32 FMA and VDPBF16PS instructions in a loop with nothing
else (``bench_peak.c``, compiled here with ``cc``), on 1 thread and on every CPU; MKL's sgemm at
4096^3; the kernels at a compute-bound shape. Each figure is GFLOP per wall-second (best of
``--repeat``) and per CPU-second of the process (all its threads; on a shared machine the second
is the steadier, as another process's load does not count, but a spinning helper thread does).
``--threads 1`` runs the kernels (and MKL) on one thread: per CPU-second, the rate of one core.
``--scaling`` instead times the widened kernel and MKL on 1 and on every thread, interleaved, best
of ``--repeat`` wall-clock: how far the second core adds (on a quiet machine only; under another
process's load the best of a few runs still shows mostly the load). The load average is printed:
the machine is shared.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--threads" in sys.argv:  # MKL reads it at its first call
    os.environ["MKL_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]

from lazarus_mcp.accel import blas

blas.preload()  # before mlx.core

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from lazarus_mcp.accel import cpu_gemm, dispatch  # noqa: E402
from lazarus_mcp.lens import cells  # noqa: E402

HIDDEN, MLP, KV, VOCAB, BLOCKS = 2048, 5632, 256, 32000, 22
# The grid's head: block N-1 is the model's own output, so 21 rows per cell, in the cell
# chunks lens/cells.py takes (11 cells: [21, 11, 32000] float32 under its 32 MiB).
HEAD_ROWS = (BLOCKS - 1) * cells.chunk_cells(BLOCKS, VOCAB)
LAYERS = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, MLP), (MLP, HIDDEN)]
SHAPES: dict[str, list[tuple[int, int, int]]] = {
    "head": [(HEAD_ROWS, HIDDEN, VOCAB)],
    "batch": [(256, k, n) for k, n in LAYERS],
    "prompt128": [(128, k, n) for k, n in LAYERS],
    "few": [(8, k, n) for k, n in LAYERS],
}


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best wall seconds and the CPU seconds of that run (all threads of this process)."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def bf16_weights(n: int, k: int, rng: np.random.Generator) -> tuple[mx.array, Any]:
    w = mx.array(rng.standard_normal((n, k), dtype=np.float32) / np.sqrt(k)).astype(mx.bfloat16)
    return w, cpu_gemm.pack_bf16(w)


def kernels(m: int, k: int, n: int, rng: np.random.Generator) -> dict[str, Callable[[], Any]]:
    w, packed = bf16_weights(n, k, rng)
    w32 = w.astype(mx.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    xm = mx.array(x)
    mx.eval(w32, xm)
    return {
        "mkl": lambda: mx.eval(xm @ w32.T),
        "bf16": lambda: cpu_gemm.gemm_bf16(x, packed, None, 1),
        "split": lambda: cpu_gemm.gemm_bf16(x, packed, None, 2),
        "widened": lambda: cpu_gemm.gemm_widened(x, packed, None),
        "exact": lambda: cpu_gemm.gemm_exact(x, packed, None),
    }


def row(label: str, flop: float, wall: float, cpu: float) -> str:
    return f"| {label} | {wall * 1e3:.1f} ms | {flop / wall / 1e9:.0f} | {flop / cpu / 1e9:.0f} |"


def core_peaks(threads: int) -> list[str]:
    """The instruction loops of ``bench_peak.c`` on 1 and on ``threads`` threads at once."""
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "peak.so"
        source = Path(__file__).with_name("bench_peak.c")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(source), "-o", str(library)],
                       check=True)  # fmt: skip
        lib = ctypes.CDLL(str(library))
    lines = []
    iterations = 10_000_000
    for name, flop in (("float32 FMA", 384), ("VDPBF16PS", 768)):
        function = getattr(lib, "lz_peak_fma" if flop == 384 else "lz_peak_dpbf16")
        function.restype, function.argtypes = ctypes.c_double, [ctypes.c_long]
        for count in sorted({1, threads}):
            cpu: list[float] = []

            def one(cpu: list[float] = cpu, function: Any = function) -> None:
                start = time.thread_time()
                function(iterations)
                cpu.append(time.thread_time() - start)

            pool = [threading.Thread(target=one) for _ in range(count)]
            wall = time.perf_counter()
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            wall = time.perf_counter() - wall
            total = flop * iterations * count
            lines.append(row(f"{name} peak, {count} thread(s)", total, wall, sum(cpu)))
    return lines


def peaks(repeat: int, rng: np.random.Generator) -> list[str]:
    n = 4096
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    lines = [row("MKL sgemm 4096^3", 2 * n**3, *timed(lambda: mx.eval(a @ b), repeat))]
    m, k, n = 512, 2048, 4096
    _, packed = bf16_weights(n, k, rng)
    x = rng.standard_normal((m, k), dtype=np.float32)
    flop = 2 * m * k * n
    for label, parts in (("bf16 kernel (VDPBF16PS)", 1), ("split kernel", 2)):
        call = lambda parts=parts: cpu_gemm.gemm_bf16(x, packed, None, parts)  # noqa: E731
        lines.append(row(f"{label} {m}x{k}x{n}", flop, *timed(call, repeat)))
    widened = lambda: cpu_gemm.gemm_widened(x, packed, None)  # noqa: E731
    lines.append(row(f"widened kernel {m}x{k}x{n}", flop, *timed(widened, repeat)))
    return lines


def scaling(repeat: int, shapes: list[str], rng: np.random.Generator) -> None:
    """Wall-clock GFLOP/s of the widened kernel and of MKL on 1 and on every thread."""
    every = len(os.sched_getaffinity(0))
    status = blas.status()
    mkl = ctypes.CDLL(status.path) if status.name == "mkl" and status.path else None
    print(f"| shape | widened, 1 / {every} threads | MKL, 1 / {every} threads |")
    print("| --- | --- | --- |")
    for name in shapes:
        for m, k, n in SHAPES[name]:
            calls = kernels(m, k, n, rng)
            best: dict[tuple[str, int], float] = {}
            for _ in range(repeat):
                for threads in (1, every):
                    cpu_gemm._threads = lambda threads=threads: threads
                    if mkl is not None:
                        mkl.MKL_Set_Num_Threads(threads)
                    for label in ("widened", "mkl"):
                        start = time.perf_counter()
                        calls[label]()
                        wall = time.perf_counter() - start
                        best[label, threads] = min(best.get((label, threads), wall), wall)
            gflop = 2 * m * k * n / 1e9
            cells = [
                f"{gflop / best[label, 1]:.0f} / {gflop / best[label, every]:.0f} GFLOP/s "
                f"({best[label, 1] / best[label, every]:.2f}x)"
                for label in ("widened", "mkl")
            ]
            print(f"| {name} {m}x{k}x{n} | {cells[0]} | {cells[1]} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--kernels", nargs="*", default=None)
    parser.add_argument("--no-peaks", action="store_true")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--scaling", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.scaling:
        print(f"load average at the start {os.getloadavg()}")
        scaling(args.repeat, args.shapes, rng)
        print(f"load average at the end {os.getloadavg()}")
        return
    threads = args.threads
    cpu_gemm._threads = lambda: threads  # the kernels' helper threads per call
    print(f"threads {threads}; load average at the start {os.getloadavg()}")
    print("| kernel, shape m x k x n | best wall | GFLOP/s | GFLOP per CPU-s |")
    print("| --- | --- | --- | --- |")
    if not args.no_peaks:
        for line in core_peaks(len(os.sched_getaffinity(0))):
            print(line, flush=True)
        for line in peaks(args.repeat, rng):
            print(line, flush=True)
    for name in args.shapes:
        for m, k, n in SHAPES[name]:
            calls = kernels(m, k, n, rng)
            for label, call in calls.items():
                if args.kernels and label not in args.kernels:
                    continue
                if label == "exact":
                    label = f"exact ({dispatch.exact_kernel(m)})"
                flop = 2 * m * k * n
                print(row(f"{label}, {name} {m}x{k}x{n}", flop, *timed(call, args.repeat)),
                      flush=True)  # fmt: skip
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
