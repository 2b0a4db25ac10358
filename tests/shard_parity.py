"""Run as a script (one shard group per process): ``python -m tests.shard_parity N DIR...``.

Loads each checkpoint whole and over N local ranks, runs the lens four ways (last position,
every position with the embedding row, a batch of prompts, some blocks of a batch at every
position) and prints one JSON line per checkpoint: the largest difference of any probability,
entropy, KL or fidelity figure at any block, whether the top-k ids, ranks and milestones agree,
and the error line of a model the pipeline refuses.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from lazarus_mcp.errors import LazarusError
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.schema import AnalysisConfig, AnalysisResult

PROMPTS = ["The capital of France is", "a b c", "Once upon a time there was a small dog"]


def _numbers(result: AnalysisResult) -> tuple[list[float], list[int]]:
    values: list[float] = []
    ids: list[int] = []
    rows = [result.layer_predictions, *(p.layer_predictions for p in result.grid or [])]
    for predictions in rows:
        for p in predictions:
            values += [p.entropy, p.kl_divergence, *(t.probability for t in p.top_k)]
            ids += [t.token_id for t in p.top_k]
    evolutions = [result.token_evolutions, *(p.token_evolutions for p in result.grid or [])]
    for evolution in evolutions:
        for e in evolution:
            values += [s.probability for s in e.layers] + [e.final_probability]
            ids += [s.rank for s in e.layers]
    values += [t.probability for t in result.final_prediction]
    values += [result.fidelity.max_abs_prob_diff, result.fidelity.kl_divergence]
    # Milestones are discrete (blocks, tokens): they must be equal.
    ids.append(hash(json.dumps(result.milestones.model_dump(), sort_keys=True)))
    return values, ids


def _diff(a: list[AnalysisResult], b: list[AnalysisResult]) -> tuple[float, bool]:
    worst, same = 0.0, True
    for x, y in zip(a, b, strict=True):
        (vx, ix), (vy, iy) = _numbers(x), _numbers(y)
        assert len(vx) == len(vy)
        worst = max([worst, *(abs(p - q) for p, q in zip(vx, vy, strict=True))])
        same = same and ix == iy and x.captured_layers == y.captured_layers
    return worst, same


async def _one(path: str, shards: int) -> dict[str, Any]:
    whole = await ModelAnalyzer.load(path, LoadOptions())
    try:
        split = await ModelAnalyzer.load(path, LoadOptions(shards=shards))
    except LazarusError as exc:
        return {"model": path, "refused": str(exc)}
    text = whole.loaded.token_text
    tracked = [q for q in (text(10), text(20)) if not text.resolve(q).multi_token]
    configs = {
        "last": AnalysisConfig(layer_strategy="all", track_tokens=tracked),
        "grid": AnalysisConfig(
            layer_strategy="all", positions="all", include_embeddings=True, track_tokens=tracked
        ),
        "batch": AnalysisConfig(layer_strategy="all", track_tokens=tracked),
        # Some blocks only: the milestones still read every block (each on its own rank).
        "some": AnalysisConfig(layer_strategy="first_last", positions="all"),
    }
    out: dict[str, Any] = {"model": path, "sharding": split.info.sharding.model_dump()}
    for mode, config in configs.items():
        prompts = PROMPTS if mode in ("batch", "some") else PROMPTS[:1]
        a = await whole.analyze_batch(prompts, config)
        b = await split.analyze_batch(prompts, config)
        out[mode] = _diff(a, b)
    return out


async def main(shards: int, paths: list[str]) -> None:
    for path in paths:
        print(json.dumps(await _one(path, shards)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
