"""Run as a script: ``python -m tests.shard_deadline MODEL``; prints one JSON line.

A call over 2 ranks whose deadline passes while the ranks work (the limit is a fraction of the
same call's time in one process), then the same call with time enough, and a generation whose
deadline passes mid-way, and a call cancelled while the ranks work: the deadline (the cancel)
ends the call with its one line, the ranks stop in step, and the group answers the next calls,
equal to one process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time

from lazarus_mcp.errors import LazarusError
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime import limits
from lazarus_mcp.runtime.analyzer import ModelAnalyzer
from lazarus_mcp.runtime.limits import Interrupt
from lazarus_mcp.schema import AnalysisConfig
from lazarus_mcp.schema.generation import GenerationConfig
from tests.shard_tools import diff

PROMPT = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)


def _timeout(seconds: float | None) -> None:
    limits.configure(dataclasses.replace(limits.current(), call_timeout=seconds))


async def main(model: str) -> None:
    default = limits.current().call_timeout
    whole = await ModelAnalyzer.load(model, LoadOptions())
    split = await ModelAnalyzer.load(model, LoadOptions(shards=2))
    config = AnalysisConfig(layer_strategy="all", positions="all")
    start = time.monotonic()
    expected = await whole.analyze(PROMPT, config)
    one_process = time.monotonic() - start
    out: dict[str, object] = {"one_process_s": round(one_process, 2)}
    _timeout(max(0.05, 0.3 * one_process))
    start = time.monotonic()
    try:
        await split.analyze(PROMPT, config)
        out["stopped"] = "not stopped"
    except LazarusError as exc:
        out["stopped"] = str(exc)
    out["stopped_after_s"] = round(time.monotonic() - start, 2)
    _timeout(default)
    out["after"] = diff(expected, await split.analyze(PROMPT, config))
    # A generation whose deadline passes between or inside its steps ends with what it wrote.
    greedy = GenerationConfig(max_new_tokens=60, layer_strategy="all")
    start = time.monotonic()
    full = await whole.generate("a b c", greedy)
    _timeout(max(0.3, 0.4 * (time.monotonic() - start)))
    start = time.monotonic()
    try:
        cut = await split.generate("a b c", greedy)
        out["generate"] = [cut.stop_reason, len(cut.steps)]
        out["generate_prefix"] = (
            cut.generated_token_ids == full.generated_token_ids[: len(cut.steps)]
        )
    except LazarusError as exc:
        out["generate"] = [str(exc), 0]
    _timeout(default)
    out["after_generate"] = diff(expected, await split.analyze(PROMPT, config))
    # A cancelled call (an MCP client's cancel): the ranks hear of it on their stdin.
    job = Interrupt.after(default)
    call = asyncio.ensure_future(split.analyze(PROMPT, config, interrupt=job))
    await asyncio.sleep(0.3 * one_process)
    job.cancel()
    try:
        await call
        out["cancelled"] = "not stopped"
    except LazarusError as exc:
        out["cancelled"] = str(exc)
    out["after_cancel"] = diff(expected, await split.analyze(PROMPT, config))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
