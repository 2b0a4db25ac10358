"""Overhead of --shards over loopback against one process, and the bytes on the wire per token.

    python examples/shards_benchmark.py MODEL [--shards 2] [--runs 5] [--new-tokens 16]
    python examples/shards_benchmark.py /tmp/wide --build   # the checkpoint docs/ measures

``--build`` first writes, at MODEL, the llama-shaped checkpoint of tests/test_distributed.py's
memory test (8 blocks, hidden 512, intermediate 1536, vocabulary 300, float32: 110 MB).

For prompts of 8 and 128 tokens: the median wall time of ``analyze`` (every block, last
position) in one process and over N local ranks (ring backend, 127.0.0.1), their ratio, and the
bytes all ranks handed to the backend per call and per prompt token (``wire.Traffic``: payloads,
not TCP framing). Then ``generate`` (greedy, every block, after an 8-token prompt): the median
time per generated token each way and the bytes per generated token (each step is one request:
the stream of one token per hop, the logits and token from the last rank, the rows' statistics).
One group per process, so this script is rank 0. Runs are interleaved, so a shared machine's
load hits both alike; say what the load was (``uptime``) with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from lazarus_mcp.distributed.group import current_group
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.schema import AnalysisConfig
from lazarus_mcp.schema.generation import GenerationConfig


def _prompt(analyzer: ModelAnalyzer, tokens: int) -> str:
    """About ``tokens`` tokens of plain text (cut from a longer one, decoded)."""
    tokenizer = analyzer.loaded.tokenizer
    text = " ".join(["the quick brown fox jumps over a lazy dog and then it runs"] * tokens)
    return str(tokenizer.decode(tokenizer.encode(text)[:tokens]))


async def _medians(
    whole: ModelAnalyzer, split: ModelAnalyzer, prompt: str, runs: int
) -> tuple[float, float]:
    """Median seconds of each, runs interleaved (a shared machine's load hits both alike)."""
    config = AnalysisConfig(layer_strategy="all")
    await whole.analyze(prompt, config)  # warm
    await split.analyze(prompt, config)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for analyzer, into in zip((whole, split), times, strict=True):
            start = time.perf_counter()
            await analyzer.analyze(prompt, config)
            into.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


async def _generation(
    whole: ModelAnalyzer, split: ModelAnalyzer, prompt: str, runs: int, tokens: int
) -> tuple[float, float]:
    """Median seconds per generated token of each, runs interleaved."""
    config = GenerationConfig(max_new_tokens=tokens, layer_strategy="all")
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for analyzer, into in zip((whole, split), times, strict=True):
            start = time.perf_counter()
            done = await analyzer.generate(prompt, config)
            into.append((time.perf_counter() - start) / len(done.steps))
    return statistics.median(times[0]), statistics.median(times[1])


async def main(model: str, shards: int, runs: int, new_tokens: int) -> None:
    whole = await ModelAnalyzer.load(model, LoadOptions())
    split = await ModelAnalyzer.load(model, LoadOptions(shards=shards))
    group = current_group()
    assert group is not None
    info = whole.info
    print(
        f"model {model}: {info.num_layers} blocks, hidden {info.hidden_size}, "
        f"vocab {info.vocab_size}, {info.compute_dtype}; {shards} ranks over loopback"
    )
    print("tokens  one process  sharded   ratio  bytes/call  bytes/token")
    for tokens in (8, 128):
        prompt = _prompt(whole, tokens)
        count = len(whole.loaded.tokenizer.encode(prompt))
        before = sum(group.traffic())
        one, many = await _medians(whole, split, prompt, runs)
        after = sum(group.traffic())
        per_call = (after - before) / (runs + 1)
        print(
            f"{count:6d}  {one * 1e3:9.1f}ms  {many * 1e3:7.1f}ms  {many / one:5.2f}x"
            f"  {per_call:10.0f}  {per_call / count:11.0f}"
        )
    prompt = _prompt(whole, 8)
    before = sum(group.traffic())
    one, many = await _generation(whole, split, prompt, runs, new_tokens)
    per_token = (sum(group.traffic()) - before) / (runs * new_tokens)
    print("generate  one process/token  sharded/token   ratio  bytes/token")
    print(
        f"{new_tokens:8d}  {one * 1e3:15.1f}ms  {many * 1e3:11.1f}ms  {many / one:5.2f}x"
        f"  {per_token:11.0f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--build", action="store_true", help="write the test checkpoint first")
    args = parser.parse_args()
    if args.build:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's tests/
        from tests.checkpoints import build_checkpoint

        build_checkpoint(
            Path(args.model),
            "llama",
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=8,
            head_dim=64,
        )
    asyncio.run(main(args.model, args.shards, args.runs, args.new_tokens))
