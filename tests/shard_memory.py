"""Run as a script: ``python -m tests.shard_memory WARMUP MODEL``; prints one JSON line.

The resident memory (RSS) a load of MODEL adds, whole in this process, and per rank over 2
ranks (each rank measures its own). WARMUP (a tiny model) is loaded first each way, so the
one-time cost of a first load (imports, MLX's own buffers) is not counted as weights.
"""

from __future__ import annotations

import asyncio
import json
import sys

from lazarus_mcp.distributed.executor import resident_bytes
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime.analyzer import ModelAnalyzer


async def main(warmup: str, model: str) -> None:
    await ModelAnalyzer.load(warmup, LoadOptions())
    before = resident_bytes()
    whole = await ModelAnalyzer.load(model, LoadOptions())
    whole_bytes = resident_bytes() - before
    await ModelAnalyzer.load(warmup, LoadOptions(shards=2))
    split = await ModelAnalyzer.load(model, LoadOptions(shards=2))
    sharding = split.info.sharding
    assert sharding is not None
    print(
        json.dumps(
            {
                "whole_resident": whole_bytes,
                "whole_weights": whole.loaded.nbytes,
                "rank_resident": sharding.resident_bytes_per_rank,
                "rank_weights": sharding.weight_bytes_per_rank,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
