"""How fast ``lazarus lens fit-jacobian`` fits a real model, against the machine's arithmetic bound.

    python examples/bench_jacobian_fit.py MODEL_DIR [--prompts 2] [--seq-len 128] [--batches 0]

The exact estimator (``lenses/jacobian_fit.py``) pulls D one-hot cotangents back through every
block for every prompt: about ``2 * D * P`` FLOPs per token in the backward passes (P: the
parameters of the blocks; SmolLM2-135M: 2 x 576 x 106.2 M = 122 GFLOP per token), plus one
forward per batch of ``dim_batch`` rows and the attention's ``T^2`` terms. This script fits
``--prompts`` prompts of ``--seq-len`` tokens (the model's own greedy text from fixed seeds,
so every run fits the same tokens), times it, and prints the achieved GFLOP/s beside the
machine's float32 sgemm peak measured in the same process (a 4096^3 MLX matmul, best of 5):
tokens per minute reached and the bound, ``peak / FLOPs per token``. ``--batches K`` stops
after K batches of rows of the first prompt and extrapolates (a quick estimate of the same
rate). One run; it prints ``uptime``'s load, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from lazarus_mcp.runtime.process import prepare_process

prepare_process()  # the BLAS the CLI uses, before mlx.core is imported

import mlx.core as mx  # noqa: E402

from lazarus_mcp.lens.head import blocks  # noqa: E402
from lazarus_mcp.lenses import corpus  # noqa: E402
from lazarus_mcp.lenses.jacobian_fit import FitProgress, JacobianSettings, fit_jacobians  # noqa: E402
from lazarus_mcp.modeling.loading import load  # noqa: E402
from lazarus_mcp.runtime import worker  # noqa: E402

GIGA = 1e9


def sgemm_peak(n: int = 4096) -> float:
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    mx.eval(a @ b)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - began)
    return 2 * n**3 / best / GIGA


def block_params(model: Any) -> int:
    from mlx.utils import tree_flatten

    return sum(v.size for b in blocks(model) for _, v in tree_flatten(b.parameters()))


def flops(params: int, d: int, length: int, layers: int, rows: int, dim_batch: int) -> float:
    """FLOPs of ``rows`` cotangent rows over one prompt of ``length`` tokens: per row a backward
    through the blocks (2 P T for the matmuls, 4 T^2 D per block for the attention's two
    products), plus one forward (the same size) per batch of ``dim_batch`` rows."""
    one_pass = 2 * params * length + 4 * length * length * d * layers
    return one_pass * (rows + -(-rows // dim_batch))


class Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--dim-batch", type=int, default=None)
    parser.add_argument("--batches", type=int, default=0, help="stop after K batches of rows")
    args = parser.parse_args()
    load_avg = os.getloadavg()
    loaded = worker.run_sync(load, args.model)
    info = loaded.info
    n, d = info.num_layers, info.hidden_size
    settings = JacobianSettings(tuple(range(n - 1)), n - 1)
    if args.dim_batch:
        settings = JacobianSettings(settings.sources, settings.target, dim_batch=args.dim_batch)
    seqs = worker.run_sync(corpus.sample_sequences, loaded.model, args.prompts, args.seq_len, 0, 11)
    peak = worker.run_sync(sgemm_peak)
    params = block_params(loaded.model)
    rows_done = [0]

    def progress(p: FitProgress) -> None:
        if p.prompt == 0 and p.rows < d:
            rows_done[0] = p.rows
            if args.batches and p.rows >= args.batches * settings.dim_batch:
                raise Stop

    began = time.perf_counter()
    try:
        worker.run_sync(
            fit_jacobians,
            loaded.model,
            seqs,
            settings,
            d,
            getattr(mx, info.compute_dtype),
            loaded.embedding_factor(None),
            loaded.sliding_windows,
            None,
            progress,
        )
        rows, prompts = d, len(seqs)
    except Stop:
        rows, prompts = rows_done[0], 1
    seconds = time.perf_counter() - began
    work = flops(params, d, args.seq_len, n, rows, settings.dim_batch) * prompts
    per_token = flops(params, d, args.seq_len, n, d, settings.dim_batch) / args.seq_len
    tokens = prompts * args.seq_len * rows / d  # whole-prompt equivalents when stopped early
    report = {
        "model": Path(args.model).name,
        "dtype": info.compute_dtype,
        "block_params": params,
        "seq_len": args.seq_len,
        "dim_batch": settings.dim_batch,
        "rows_timed": rows * prompts,
        "seconds": round(seconds, 1),
        "gflop_per_token": round(per_token / GIGA, 1),
        "achieved_gflops": round(work / seconds / GIGA, 1),
        "sgemm_peak_gflops": round(peak, 1),
        "tokens_per_minute": round(60 * tokens / seconds, 1),
        "bound_tokens_per_minute": round(60 * peak * GIGA / per_token, 1),
        "load_before": [round(x, 2) for x in load_avg],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
