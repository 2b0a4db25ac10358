"""lazarus against the PyTorch peer, and against the machine's bound, in one run.

    pip install -e ".[bench]" && python examples/benchmark.py

Makes (once, under ~/.cache/lazarus-bench) a TinyLlama-shaped checkpoint with random bfloat16
weights and a 4-bit version of it (``bench_model.py``), then measures, side by side:

- warm ``ModelAnalyzer.analyze`` latency (model loaded; all blocks, top-5, last position) at 8 and
  128 prompt tokens, for the bfloat16 and the 4-bit checkpoint, as medians of ``--runs`` rounds;
- the peer doing the same work (``bench_peer.py``: transformers + PyTorch, bfloat16 and float32);
- the cold ``lazarus introspect analyze ... --all-layers --raw`` process against the peer's cold
  script (imports, load, one lens), and each process's peak RSS;
- the machine's bound: the weights read once at the measured memory bandwidth, or the FLOPs at the
  measured sgemm peak, whichever is larger;
- the grid (every block at every position of 128 tokens) and a batch of 32 prompts against the
  peer doing the same, and against 32 single calls (``bench_grid.py``; ``--only-grid`` alone).

Every engine runs in its own process (MLX and PyTorch each bring their own BLAS and threads); the
warm workers stay loaded and are asked in turn, round after round, so a busy machine slows all of
them alike. The tables go to stdout and into docs/performance.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"
TOKENS = (8, 128)
GB = 1e9

sys.path.insert(0, str(HERE))
from bench_grid import grid_phase, grid_report  # noqa: E402
from bench_model import CONFIG, default_dir, num_params, prompt, serve  # noqa: E402

GRID_BEGIN, GRID_END = "<!-- grid-benchmark:begin -->", "<!-- grid-benchmark:end -->"

# --------------------------------------------------------------------------- workers (subprocesses)


def bound_worker() -> None:
    """Print the machine's sgemm peak (MLX float32 with the preloaded BLAS) and read bandwidth."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from lazarus_mcp.accel import blas

    status = blas.preload()  # before mlx.core is imported
    import mlx.core as mx

    def best(fn: Any, repeat: int = 7) -> float:
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    n = 4096
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    sgemm = 2 * n**3 / best(lambda: mx.eval(a @ b)) / GB
    # Read bandwidth: sum 1 GiB in as many threads as cores (numpy releases the GIL).
    threads = os.cpu_count() or 1
    chunks = np.array_split(np.ones(2**28, dtype=np.float32), threads)
    with ThreadPoolExecutor(threads) as pool:
        read = best(lambda: list(pool.map(np.sum, chunks)))
    bandwidth = sum(c.nbytes for c in chunks) / read / GB
    machine = {"sgemm_gflops": sgemm, "bandwidth_gbs": bandwidth, "blas": status.name}
    print(json.dumps(machine))


def torch_peak_worker() -> None:
    """Print PyTorch's bfloat16 and float32 GEMM peaks: the peer's bfloat16 path can beat the
    float32 bound where the CPU has bfloat16 dot products (AVX512-BF16, AMX)."""
    import torch

    n = 4096
    peaks = {}
    for dtype in ("bfloat16", "float32"):
        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, dtype=getattr(torch, dtype))
        torch.mm(a, b)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        peaks[f"torch_{dtype}_gflops"] = 2 * n**3 / min(times) / GB
    print(json.dumps(peaks))


def mlx_worker(path: str, dtype: str) -> None:
    """A warm lazarus worker: the public async API, the model loaded once.

    Set up as lazarus's own processes (the CLI, the MCP server) are, so PyTorch, installed here
    for the peer, stays out of it as it does out of them.
    """
    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    import anyio
    import anyio.from_thread
    import anyio.to_thread

    from lazarus_mcp.accel import blas
    from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer

    config = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5, use_chat_template=False)

    async def main() -> None:
        start = time.perf_counter()
        analyzer = await ModelAnalyzer.from_pretrained(path, dtype=dtype)
        load_s = time.perf_counter() - start
        info = analyzer.info

        def run_lens(n: int) -> None:
            result = anyio.from_thread.run(analyzer.analyze, prompt(n), config)
            assert len(result.token_ids) == n, f"the prompt is {len(result.token_ids)} tokens"

        ready = {"load_s": load_s, "compute_dtype": info.compute_dtype, "blas": blas.status().name}
        await anyio.to_thread.run_sync(serve, run_lens, ready)

    anyio.run(main)


# --------------------------------------------------------------------------- the orchestrator


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


class Worker:
    """A warm worker process speaking ``bench_model.serve``'s protocol."""

    def __init__(self, name: str, cmd: list[str], log: Path) -> None:
        self.name = name
        self.times: dict[int, list[float]] = {n: [] for n in TOKENS}
        self._log = log.open("ab")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=worker_env(),
            text=True,
            bufsize=1,
        )
        self.ready = self._read()
        self.peak_rss = 0

    def _read(self) -> dict[str, Any]:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            raise RuntimeError(f"worker {self.name} died; see {self._log.name}")
        return json.loads(line)

    def ask(self, n: int) -> float:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{n}\n")
        return float(self._read()["s"])

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write("quit\n")
        self.peak_rss = int(self._read()["peak_rss"])
        self._proc.wait()
        self._log.close()

    def median(self, n: int) -> float:
        return statistics.median(self.times[n])


def rounds(workers: list[Worker], runs: int) -> None:
    """Ask every worker in turn, a round at a time; round 0 warms up and is not counted."""
    for r in range(runs + 1):
        for worker in workers:
            for n in TOKENS:
                seconds = worker.ask(n)
                if r:
                    worker.times[n].append(seconds)
        print(f"  round {r}/{runs}", file=sys.stderr, flush=True)


def cold(cmd: list[str], log: Path) -> tuple[float, int]:
    """Wall time and peak RSS of one whole process."""
    with log.open("ab") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=worker_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}); see {log}")
    return wall, usage.ru_maxrss * 1024


def lazarus_cmd() -> list[str]:
    script = Path(sys.executable).with_name("lazarus")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "lazarus_cli.main"]


# --------------------------------------------------------------------------- the bound


def stored_bytes(path: Path) -> int:
    """Bytes of the weights a forward reads once: every tensor but the embedding table (of which
    only the prompt's rows are read), from the safetensors headers."""
    total = 0
    for file in path.glob("*.safetensors"):
        with file.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        for name, meta in header.items():
            if name != "__metadata__" and "embed_tokens" not in name:
                begin, end = meta["data_offsets"]
                total += end - begin
    return total


def flops(tokens: int) -> float:
    """Matmul FLOPs of the forward plus the lens head (22 rows) at the last position."""
    c = CONFIG
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    layers, kv = c["num_hidden_layers"], c["num_key_value_heads"] * c["head_dim"]
    per_token = layers * (2 * d * d + 2 * d * kv + 3 * d * f)
    attention = layers * 2 * tokens * tokens * d  # QK^T and AV, causal half of 2 * 2
    return 2 * per_token * tokens + 2 * attention + 2 * layers * v * d


def bound_s(bytes_read: int, tokens: int, machine: dict[str, float]) -> float:
    memory = bytes_read / (machine["bandwidth_gbs"] * GB)
    compute = flops(tokens) / (machine["sgemm_gflops"] * GB)
    return max(memory, compute)


# --------------------------------------------------------------------------- the report


@dataclass
class Results:
    machine: dict[str, float]
    help_s: float
    warm: dict[str, Worker] = field(default_factory=dict)
    cold: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    bytes_read: dict[str, int] = field(default_factory=dict)
    bf16_weight_bytes: int = 0
    load: tuple[float, float] = (0.0, 0.0)
    wall_s: float = 0.0


def secs(x: float) -> str:
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def cold_median(results: Results, name: str) -> float:
    return statistics.median(w for w, _ in results.cold[name])


def peer_best(results: Results, n: int | None) -> tuple[float, str]:
    """The peer's better dtype at n tokens (None: cold)."""
    options = []
    for dtype in ("bfloat16", "float32"):
        name = f"peer {dtype}"
        value = results.warm[name].median(n) if n else cold_median(results, name)
        options.append((value, dtype))
    return min(options)


def engine_rows(results: Results) -> list[str]:
    rows = []
    for name, worker in results.warm.items():
        cold_s = cold_median(results, name)
        peak = max(worker.peak_rss, *(r for _, r in results.cold[name]))
        ratio = peak / results.bf16_weight_bytes
        rows.append(
            f"| {name} | {secs(worker.median(8))} | {secs(worker.median(128))} | {secs(cold_s)} "
            f"| {peak / GB:.2f} GB ({ratio:.2f}x) |"
        )
    return rows


def ratio_rows(results: Results) -> list[str]:
    rows = []
    for name, worker in results.warm.items():
        if name.startswith("peer"):
            continue
        key = "bf16" if "bf16" in name else "4bit"
        cells = []
        for n in TOKENS:
            best, dtype = peer_best(results, n)
            bound = bound_s(results.bytes_read[key], n, results.machine)
            mine = worker.median(n)
            float32 = results.warm["peer float32"].median(n)
            cells.append(
                f"{mine / best:.2f}x (vs {dtype}), {mine / float32:.2f}x (vs float32) "
                f"/ {mine / bound:.2f}x"
            )
        best, dtype = peer_best(results, None)
        cells.append(f"{cold_median(results, name) / best:.2f}x (vs {dtype})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def bound_rows(results: Results) -> list[str]:
    m = results.machine
    rows = []
    for key, label in (("bf16", "bfloat16 checkpoint"), ("4bit", "4-bit checkpoint")):
        read = results.bytes_read[key]
        cells = [secs(bound_s(read, n, m)) for n in TOKENS]
        rows.append(f"| {label} ({read / GB:.2f} GB read) | " + " | ".join(cells) + " |")
    return rows


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("mlx", "mlx-lm", "mkl", "torch", "transformers"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(results: Results, command: str) -> str:
    m = results.machine
    mlx_ready = next(w.ready for n, w in results.warm.items() if n.startswith("lazarus"))
    lines = [
        f"Command: `{command}` (whole run {results.wall_s / 60:.1f} min)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; {platform.platform()}; Python "
        f"{platform.python_version()}; {versions()}. lazarus BLAS: {mlx_ready['blas']}. "
        f"Load average {results.load[0]:.1f} at the start, {results.load[1]:.1f} at the end.",
        "",
        f"Machine bound: sgemm {m['sgemm_gflops']:.0f} GFLOP/s (MLX + the preloaded BLAS), read "
        f"bandwidth {m['bandwidth_gbs']:.1f} GB/s. PyTorch's GEMM peaks for comparison: bfloat16 "
        f"{m['torch_bfloat16_gflops']:.0f}, float32 {m['torch_float32_gflops']:.0f} GFLOP/s. "
        f"`lazarus --help`: {secs(results.help_s)}.",
        "",
        "| engine | warm, 8 tokens | warm, 128 tokens | cold CLI / script "
        "| peak RSS (x bf16 weights) |",
        "| --- | --- | --- | --- | --- |",
        *engine_rows(results),
        "",
        "Ratios (targets: warm and cold at most 1.25x the peer's better dtype and, for the "
        "default, at most 1.0x the peer's float32, the equal-accuracy comparison; at most 1.5x "
        "the bound; peak RSS at most 2.2x the bfloat16 weight bytes):",
        "",
        "| engine | 8 tokens: / peer / bound | 128 tokens: / peer / bound | cold: / peer |",
        "| --- | --- | --- | --- |",
        *ratio_rows(results),
        "",
        "The bound (weights read once at the bandwidth, or the FLOPs at the sgemm peak):",
        "",
        "| checkpoint | 8 tokens | 128 tokens |",
        "| --- | --- | --- |",
        *bound_rows(results),
    ]
    return "\n".join(lines) + "\n"


def write_doc(text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the generated block of docs/performance.md (the prose around it stays)."""
    block = f"{begin}\n{text}{end}"
    old = DOC.read_text() if DOC.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(new)


# --------------------------------------------------------------------------- the run


def run_json(flag: str, log: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, flag]
    out = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), check=True)
    with log.open("a") as f:
        f.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_machine(log: Path) -> dict[str, float]:
    return run_json("--bound-worker", log) | run_json("--torch-peak-worker", log)


def time_help() -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*lazarus_cmd(), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# lazarus's engines: the checkpoint and the --dtype. auto is the default (float32-accurate
# matmul inputs); --dtype bfloat16 rounds them to bfloat16, as the peer's bfloat16 does.
ENGINES = {
    "lazarus, bf16 checkpoint": ("bf16", "auto"),
    "lazarus, bf16 checkpoint, --dtype bfloat16": ("bf16", "bfloat16"),
    "lazarus, 4-bit checkpoint": ("4bit", "auto"),
}


def warm_phase(results: Results, paths: dict[str, Path], runs: int, log: Path) -> None:
    """The peer's two dtypes stay loaded; the lazarus workers take turns beside them."""
    py = sys.executable
    peer = [py, str(HERE / "bench_peer.py"), str(paths["bf16"]), "--serve", "--dtype"]
    peers = {f"peer {d}": Worker(f"peer {d}", [*peer, d], log) for d in ("bfloat16", "float32")}
    for label, (key, dtype) in ENGINES.items():
        print(f"warm: {label}", file=sys.stderr, flush=True)
        cmd = [py, __file__, "--mlx-worker", str(paths[key]), "--dtype", dtype]
        worker = Worker(label, cmd, log)
        rounds([worker, *peers.values()], runs)
        worker.close()
        results.warm[label] = worker
    for worker in peers.values():
        worker.close()
    results.warm |= peers


def cold_phase(results: Results, paths: dict[str, Path], runs: int, log: Path) -> None:
    text = prompt(8)
    cli = [*lazarus_cmd(), "introspect", "analyze", "-p", text, "--all-layers", "--raw"]
    commands = {
        label: [*cli, "-m", str(paths[key]), "--dtype", dtype]
        for label, (key, dtype) in ENGINES.items()
    }
    for dtype in ("bfloat16", "float32"):
        peer = [sys.executable, str(HERE / "bench_peer.py"), str(paths["bf16"])]
        commands[f"peer {dtype}"] = [*peer, "--dtype", dtype, "--tokens", "8"]
    for r in range(runs):
        for name, cmd in commands.items():
            results.cold.setdefault(name, []).append(cold(cmd, log))
        print(f"  cold round {r + 1}/{runs}", file=sys.stderr, flush=True)


def make_checkpoints(cache: Path) -> dict[str, Path]:
    """In a child process: the converter imports MLX (and transformers, PyTorch) that the
    orchestrator, which only times other processes, should not hold."""
    cmd = [sys.executable, str(HERE / "bench_model.py"), "--out", str(cache)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), check=True)
    bf16, q4 = (Path(line) for line in out.stdout.splitlines()[-2:])  # after mlx-lm's logs
    return {"bf16": bf16, "4bit": q4}


def run_benchmark(args: argparse.Namespace) -> Results:
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    print(f"checkpoints in {args.cache}", file=sys.stderr, flush=True)
    paths = make_checkpoints(args.cache)
    log = args.cache / "benchmark.log"
    log.write_text("")
    results = Results(machine=measure_machine(log), help_s=time_help())
    results.bytes_read = {k: stored_bytes(p) for k, p in paths.items()}
    results.bf16_weight_bytes = 2 * num_params(CONFIG)
    warm_phase(results, paths, args.runs, log)
    print("cold runs", file=sys.stderr, flush=True)
    cold_phase(results, paths, args.cold_runs, log)
    results.load = (load_start, os.getloadavg()[0])
    results.wall_s = time.perf_counter() - start
    return results


def run_grid_phase(args: argparse.Namespace, command: str) -> str:
    """The grid and batch comparison (``bench_grid.py``); written to its own block of the doc."""
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    paths = make_checkpoints(args.cache)
    log = args.cache / "grid-benchmark.log"
    log.write_text("")
    workers = grid_phase(paths["bf16"], args.grid_runs, log, worker_env())
    text = (
        f"Command: `{command}` (grid phase {(time.perf_counter() - start) / 60:.1f} min; "
        f"{cpu_name()}, {os.cpu_count()} cores; load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; medians of {args.grid_runs} rounds)\n\n"
        + grid_report(workers)
        + "\n"
    )
    print(text)
    if not args.no_write:
        write_doc(text, GRID_BEGIN, GRID_END)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm rounds (medians of these)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold processes per engine")
    parser.add_argument("--cache", type=Path, default=default_dir(), help="checkpoint directory")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--no-grid", action="store_true", help="skip the grid and batch phase")
    parser.add_argument("--only-grid", action="store_true", help="the grid and batch phase alone")
    parser.add_argument("--grid-runs", type=int, default=3, help="grid and batch rounds")
    parser.add_argument("--bound-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-peak-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mlx-worker", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bound_worker:
        return bound_worker()
    if args.torch_peak_worker:
        return torch_peak_worker()
    if args.mlx_worker:
        return mlx_worker(args.mlx_worker, args.dtype)
    args.cache = args.cache.expanduser()
    argv = " ".join(sys.argv[1:])
    command = f"python examples/benchmark.py{' ' + argv if argv else ''}"
    grid_text = "" if args.no_grid else run_grid_phase(args, command)
    if args.only_grid:
        return
    results = run_benchmark(args)
    text = report(results, command)
    print(text + "\n" + grid_text)
    if not args.no_write:
        write_doc(text)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
