"""The grid and the batch against the PyTorch peer: a phase of ``benchmark.py`` (issue 11).

    python examples/benchmark.py --only-grid        # this phase alone
    python examples/benchmark.py                    # with everything else

On the benchmark's TinyLlama-shaped bfloat16 checkpoint (``bench_model.py``), every engine in
its own warm process, asked in turn round after round:

- ``grid``: the lens of every block at every position of a 128-token prompt (top-5, entropy,
  KL(final || layer) at each cell). lazarus: ``positions="all"``. The peer: one forward with
  ``output_hidden_states``, the final norm and ``lm_head`` on every position of every block,
  the model's own logits for the last block, log-softmax, top-k, the same statistics.
- ``batch``: 32 prompts of 8 tokens, every block at the last position. lazarus:
  ``analyze_batch`` (one padded forward). The peer: its padded batch (left padding, attention
  mask), ``logits_to_keep=1``, the lens of every block on the batch's last positions.
- ``singles``: lazarus on the same 32 prompts, one ``analyze`` call each.

lazarus runs twice: ``--dtype auto`` (on a CPU with AVX512-BF16, the bfloat16 checkpoint's
linear layers go through lazarus's bf16 kernels, float32-accurate) and ``--dtype float32``
(MLX's matmul on the preloaded BLAS). Measured on a loaded 2-core Xeon: the kernels win for a
few rows (an 8-token call: 0.6 s against 1.25 s) and lose for hundreds (the batch's forward,
256 rows: 17 s against 7 s), so which one the grid and the batch want depends on their size.

Targets: grid <= 1.0x the peer's time; batch >= 4x the throughput of 32 single calls and
<= 1.0x the peer's batch time.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_model import SPECIALS, VOCAB, peak_rss_bytes, prompt, reply, word  # noqa: E402

GRID_TOKENS = 128
BATCH, BATCH_TOKENS = 32, 8
JOBS = ("grid", "batch", "singles")
# --dtype auto sends the bfloat16 checkpoint's linear layers to lazarus's bf16 kernels (fast for
# a few rows); float32 sends them to MLX's float32 matmul on the preloaded BLAS (fast for many).
LAZARUS_ENGINES = {"lazarus": "auto", "lazarus --dtype float32": "float32"}


def batch_prompts(count: int = BATCH, tokens: int = BATCH_TOKENS) -> list[str]:
    """``count`` different prompts of exactly ``tokens`` tokens (BOS included)."""
    rng = np.random.default_rng(tokens * 1000 + count)
    ids = rng.integers(0, VOCAB - len(SPECIALS), size=(count, tokens - 1))
    return [" ".join(word(int(i)) for i in row) for row in ids]


def serve_jobs(jobs: dict[str, Callable[[], None]], ready: dict[str, Any]) -> None:
    """Each stdin line names a job; the answer is its time; ``quit`` answers the peak RSS."""
    reply({"ready": True, **ready})
    for line in sys.stdin:
        name = line.strip()
        if name == "quit":
            break
        start = time.perf_counter()
        jobs[name]()
        reply({"job": name, "s": time.perf_counter() - start})
    reply({"peak_rss": peak_rss_bytes()})


# --------------------------------------------------------------------------- workers


def lazarus_worker(path: str, dtype: str) -> None:
    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    import anyio
    import anyio.from_thread
    import anyio.to_thread

    from lazarus_mcp.introspection import AnalysisConfig, LayerStrategy, ModelAnalyzer

    last = AnalysisConfig(layer_strategy=LayerStrategy.ALL, top_k=5, use_chat_template=False)
    grid = last.model_copy(update={"positions": "all"})
    texts = batch_prompts()

    async def main() -> None:
        analyzer = await ModelAnalyzer.from_pretrained(path, dtype=dtype)

        def run_grid() -> None:
            result = anyio.from_thread.run(analyzer.analyze, prompt(GRID_TOKENS), grid)
            assert result.grid is not None and len(result.grid) == GRID_TOKENS

        def run_batch() -> None:
            results = anyio.from_thread.run(analyzer.analyze_batch, texts, last)
            assert [len(r.token_ids) for r in results] == [BATCH_TOKENS] * BATCH

        def run_singles() -> None:
            for text in texts:
                anyio.from_thread.run(analyzer.analyze, text, last)

        jobs = {"grid": run_grid, "batch": run_batch, "singles": run_singles}
        ready = {"compute_dtype": analyzer.info.compute_dtype, "matmul": analyzer.info.matmul}
        await anyio.to_thread.run_sync(serve_jobs, jobs, ready)

    anyio.run(main)


def peer_worker(path: str, dtype: str) -> None:
    import torch
    from bench_peer import load

    model, tokenizer = load(path, dtype)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # the last position is -1 in every row

    def stats(logits: torch.Tensor, top_k: int = 5) -> list[torch.Tensor]:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        final = logprobs[-1:]
        top = torch.topk(logprobs, top_k, dim=-1)
        return [
            top.indices,
            top.values.exp(),
            -(logprobs.exp() * logprobs).sum(-1),
            (final.exp() * (final - logprobs)).sum(-1),
        ]

    @torch.inference_mode()
    def run_grid() -> None:
        ids = torch.tensor([tokenizer.encode(prompt(GRID_TOKENS))])
        assert ids.shape[1] == GRID_TOKENS
        out = model(ids, output_hidden_states=True)
        blocks = torch.stack([h[0] for h in out.hidden_states[1:-1]])  # [L-1, T, D]
        logits = model.lm_head(model.model.norm(blocks))
        stats(torch.cat([logits, out.logits]))  # [L, T, V]

    @torch.inference_mode()
    def run_batch() -> None:
        enc = tokenizer(batch_prompts(), return_tensors="pt", padding=True)
        out = model(**enc, output_hidden_states=True, logits_to_keep=1)
        blocks = torch.stack([h[:, -1] for h in out.hidden_states[1:-1]])  # [L-1, B, D]
        logits = model.lm_head(model.model.norm(blocks))
        stats(torch.cat([logits, out.logits[:, -1][None]]))  # [L, B, V]

    jobs = {"grid": run_grid, "batch": run_batch}
    serve_jobs(jobs, {"threads": torch.get_num_threads()})


# --------------------------------------------------------------------------- the phase


class JobWorker:
    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.times: dict[str, list[float]] = {}
        self._log = log.open("ab")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            bufsize=1,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            raise RuntimeError(f"worker {self.name} died; see {self._log.name}")
        return json.loads(line)

    def ask(self, job: str) -> float:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{job}\n")
        return float(self._read()["s"])

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write("quit\n")
        self._read()
        self._proc.wait()
        self._log.close()

    def median(self, job: str) -> float:
        return statistics.median(self.times[job])


def grid_phase(path: Path, runs: int, log: Path, env: dict[str, str]) -> dict[str, JobWorker]:
    """lazarus (--dtype auto) and the peer in bfloat16 and float32, round after round."""
    py, me = sys.executable, str(Path(__file__).resolve())
    workers = {}
    for name, dtype in LAZARUS_ENGINES.items():
        cmd = [py, me, "--lazarus", str(path), "--dtype", dtype]
        workers[name] = JobWorker(name, cmd, log, env)
    for dtype in ("bfloat16", "float32"):
        cmd = [py, me, "--peer", str(path), "--dtype", dtype]
        workers[f"peer {dtype}"] = JobWorker(f"peer {dtype}", cmd, log, env)
    for r in range(runs + 1):  # round 0 warms up
        for name, worker in workers.items():
            for job in JOBS:
                if job == "singles" and not name.startswith("lazarus"):
                    continue
                seconds = worker.ask(job)
                if r:
                    worker.times.setdefault(job, []).append(seconds)
        print(f"  grid round {r}/{runs}", file=sys.stderr, flush=True)
    for worker in workers.values():
        worker.close()
    return workers


def grid_report(workers: dict[str, JobWorker]) -> str:
    peers = {n: w for n, w in workers.items() if n.startswith("peer")}

    def best(job: str) -> tuple[float, str]:
        return min((w.median(job), n.removeprefix("peer ")) for n, w in peers.items())

    def s(x: float) -> str:
        return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"

    grid_peer, grid_dtype = best("grid")
    batch_peer, batch_dtype = best("batch")
    rows = [
        f"| {name} | {s(w.median('grid'))} | {s(w.median('batch'))} | "
        + (s(w.median("singles")) if "singles" in w.times else "-")
        + " |"
        for name, w in workers.items()
    ]
    ratios = []
    for name in LAZARUS_ENGINES:
        mine = workers[name]
        speedup = mine.median("singles") / mine.median("batch")
        f32 = workers["peer float32"]
        ratios.append(
            f"- {name} ({mine.ready['compute_dtype']}, {mine.ready['matmul']} linear layers): "
            f"grid {mine.median('grid') / grid_peer:.2f}x the peer's time (its faster dtype, "
            f"{grid_dtype}; target <= 1.0x), {mine.median('grid') / f32.median('grid'):.2f}x its "
            f"float32; batch {mine.median('batch') / batch_peer:.2f}x the peer's padded batch (vs "
            f"{batch_dtype}; target <= 1.0x), {mine.median('batch') / f32.median('batch'):.2f}x "
            f"its float32, and {speedup:.1f}x the throughput of {BATCH} single calls (target >= 4x)"
        )
    return "\n".join(
        [
            f"Grid and batch (issue 11): the grid is every block at every position of a "
            f"{GRID_TOKENS}-token prompt; the batch {BATCH} prompts of {BATCH_TOKENS} tokens, "
            "every block at the last position.",
            "",
            f"| engine | grid, {GRID_TOKENS} tokens | batch of {BATCH} | {BATCH} single calls |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            *ratios,
        ]
    )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lazarus")
    parser.add_argument("--peer")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    if args.lazarus:
        lazarus_worker(args.lazarus, args.dtype)
    elif args.peer:
        peer_worker(args.peer, args.dtype)
    else:
        parser.error("a worker: --lazarus PATH or --peer PATH (benchmark.py runs the phase)")


if __name__ == "__main__":
    main()
