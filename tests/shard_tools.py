"""Run as a script (one shard group per process): ``python -m tests.shard_tools N A B [DIR...]``
(``--families`` for DIR: every registry family's test config, built in a temporary directory).

Loads each checkpoint whole and over N local ranks and runs, both ways, what goes beyond the
lens of prompts: ``compare`` (two prompts; two models, A and B, both split over the same group),
``attribute`` (the model's own top token; targets with a foil and some blocks), ``generate``
(greedy past gemma3-text's 4-token window, and sampled with a seed) and multi-token tracked
strings. A call one process refuses (attribute on parallel blocks) must be refused alike. B
serves only the two-model compare. Prints one JSON line per checkpoint (A and the DIRs), and one
for the two-model compare: per mode the largest difference of any number in the results and
whether everything else (tokens, ids, ranks, milestones, text) is equal.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lazarus_mcp.errors import LazarusError
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.schema import AnalysisConfig, AttributionConfig
from lazarus_mcp.schema.generation import GenerationConfig

PROMPT = "The capital of France is"


def _flatten(value: Any, out: list[tuple[bool, Any]]) -> None:
    if isinstance(value, dict):
        for key, item in sorted(value.items()):
            if key != "model":  # the model's info: its sharding differs by design
                _flatten(item, out)
    elif isinstance(value, list):
        for item in value:
            _flatten(item, out)
    else:
        out.append((isinstance(value, float), value))


def diff(a: BaseModel, b: BaseModel) -> tuple[float, bool]:
    """The largest difference of any float, and whether every other value is equal."""
    xs: list[tuple[bool, Any]] = []
    ys: list[tuple[bool, Any]] = []
    whole, split = a.model_dump(), b.model_dump()
    # attribute's per-block decomposition stays in one process (its ranks hold the earlier
    # blocks' components): split results leave it empty, the one field they may lack.
    if split.get("block_attributions") == []:
        whole.pop("block_attributions", None)
        split.pop("block_attributions")
    _flatten(whole, xs)
    _flatten(split, ys)
    if len(xs) != len(ys):
        return float("inf"), False
    worst, same = 0.0, True
    for (is_float, x), (_, y) in zip(xs, ys, strict=True):
        if is_float and isinstance(y, float):
            worst = max(worst, abs(x - y))
        else:
            same = same and x == y
    return worst, same


async def _one(whole: ModelAnalyzer, split: ModelAnalyzer) -> dict[str, Any]:
    text = whole.loaded.token_text
    single = [q for q in (text(10), text(20)) if not text.resolve(q).multi_token]
    multi = next(
        q for q in (" Paris France", "hello world", " 1234 5678") if text.resolve(q).multi_token
    )
    out: dict[str, Any] = {"model": whole.info.path, "ranks": split.info.sharding.ranks}

    async def both(mode: str, call: Any) -> Any:
        try:
            a = await call(whole)
        except LazarusError as refused:
            # Refused in one process (attribute on parallel blocks): refused alike when split.
            try:
                await call(split)
            except LazarusError as also:
                out[mode] = (0.0, str(also) == str(refused))
            else:
                out[mode] = (float("inf"), False)
            return None
        out[mode] = diff(a, await call(split))
        return a

    every = AnalysisConfig(layer_strategy="all", track_tokens=single, top_k=3)
    some = AnalysisConfig(layer_strategy="first_last", top_k=2)
    await both("compare", lambda m: m.compare(PROMPT, every, prompt_b="a b c"))
    await both("compare_some", lambda m: m.compare("a b c", some, prompt_b=PROMPT))
    await both("attribute", lambda m: m.attribute(PROMPT, AttributionConfig(layer_strategy="all")))
    foiled = AttributionConfig(layer_strategy="first_last", track_tokens=single, foil=text(30))
    await both("attribute_foil", lambda m: m.attribute(PROMPT, foiled))
    greedy = GenerationConfig(max_new_tokens=10, layer_strategy="all", track_tokens=single)
    await both("generate", lambda m: m.generate(PROMPT, greedy))
    sampled = GenerationConfig(max_new_tokens=5, temperature=0.9, seed=11, top_k=3)
    await both("generate_sampled", lambda m: m.generate(PROMPT, sampled))
    tracked = AnalysisConfig(layer_strategy="all", track_tokens=[multi, *single])
    result = await both("multi_token", lambda m: m.analyze(PROMPT, tracked))
    out["multi_token_scored"] = result.token_evolutions[0].final_sequence_logprob is not None
    return out


async def main(shards: int, pair: list[str], paths: list[str]) -> None:
    options = LoadOptions(shards=shards)
    for path in [pair[0], *paths]:
        whole = await ModelAnalyzer.load(path, LoadOptions())
        split = await ModelAnalyzer.load(path, options)
        print(json.dumps(await _one(whole, split)), flush=True)
    # Two models on one group: each rank holds its share of both.
    config = AnalysisConfig(layer_strategy="all", top_k=2)
    a_whole, b_whole = [await ModelAnalyzer.load(p, LoadOptions()) for p in pair]
    a_split, b_split = [await ModelAnalyzer.load(p, options) for p in pair]
    x = await a_whole.compare(PROMPT, config, other=b_whole)
    y = await a_split.compare(PROMPT, config, other=b_split)
    print(json.dumps({"model": " vs ".join(pair), "compare_models": diff(x, y)}), flush=True)


def _families(directory: Path) -> list[str]:
    from tests.checkpoints import FAMILY_CONFIGS, build_checkpoint

    return [str(build_checkpoint(directory / f, f)) for f in sorted(FAMILY_CONFIGS)]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        paths = sys.argv[4:]
        if paths == ["--families"]:
            paths = _families(Path(scratch))
        asyncio.run(main(int(sys.argv[1]), sys.argv[2:4], paths))
