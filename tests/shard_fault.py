"""Run as a script: ``python -m tests.shard_fault MODEL CALL_TIMEOUT``; rank 0 of a 2-rank group
for the fault tests (``test_distributed.py``).

It loads MODEL over 2 ranks, prints ``READY <rank 1's pid>``, waits for a line on stdin, runs
one analysis and prints ``ERROR <the message>`` (or ``OK``), then one more call (``AFTER ...``),
then exits. The test hangs or kills rank 1 in between.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

from lazarus_mcp.distributed.group import current_group
from lazarus_mcp.errors import LazarusError
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime import limits
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.schema import AnalysisConfig


async def main(model: str, timeout: float) -> None:
    limits.configure(dataclasses.replace(limits.current(), call_timeout=timeout))
    analyzer = await ModelAnalyzer.load(model, LoadOptions(shards=2))
    group = current_group()
    assert group is not None and group.launch is not None
    print("READY", group.launch.ranks[0].process.pid, flush=True)
    sys.stdin.readline()
    config = AnalysisConfig(layer_strategy="all", positions="all")
    start = time.monotonic()
    for label in ("ERROR", "AFTER"):
        try:
            await analyzer.analyze("The capital of France is", config)
            print("OK", flush=True)
        except LazarusError as exc:
            print(label, f"{time.monotonic() - start:.1f}", str(exc), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
