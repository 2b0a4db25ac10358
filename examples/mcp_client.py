"""A small MCP client: spawn ``lazarus-mcp`` over stdio and use its tools as an agent would.

It lists the tools, runs ``analyze`` once cold (the call loads the model) and a few times warm,
then ``track_tokens``, ``model_info`` and ``loaded_models``, printing each tool's text rendering
and the latencies measured here, on the client side, around each call::

    python examples/mcp_client.py                                   # the bundled demo model
    python examples/mcp_client.py -m ../shared/parity/llama --raw   # any local checkpoint
    python examples/mcp_client.py -m Qwen/Qwen3-0.6B -p "What is the capital of France?"

Progress notifications (the server sends them while it loads and analyzes) go to stderr.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def server_command() -> str:
    """The ``lazarus-mcp`` installed beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "lazarus-mcp"
    found = str(beside) if beside.is_file() else shutil.which("lazarus-mcp")
    if found is None:
        sys.exit("lazarus-mcp is not installed: pip install lazarus-mcp (or pip install -e .)")
    return found


async def on_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"  .. {progress:.2f}/{total or 0:g} {message or ''}", file=sys.stderr)


async def timed_call(
    session: ClientSession, tool: str, args: dict[str, Any], progress: bool = False
) -> tuple[Any, float]:
    began = time.perf_counter()
    result = await session.call_tool(
        tool, args, progress_callback=on_progress if progress else None
    )
    elapsed = time.perf_counter() - began
    text = result.content[0].text if result.content else ""
    if result.is_error:
        sys.exit(f"{tool} failed: {text}")
    return result, elapsed


async def run(args: argparse.Namespace) -> None:
    params = StdioServerParameters(command=server_command(), args=["--log-level", "WARNING"])
    began = time.perf_counter()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        started = time.perf_counter() - began
        print(f"Connected to {init.server_info.name} {init.server_info.version} ({started:.2f} s)")
        for tool in (await session.list_tools()).tools:
            print(f"  tool {tool.name}: {tool.description.split(':')[0]}")

        analyze = {"model": args.model, "prompt": args.prompt, "raw": args.raw}
        analyze |= {"layer_strategy": "all", "track_tokens": args.track}
        result, cold = await timed_call(session, "analyze", analyze, progress=True)
        print("\n# analyze (cold: loads the model)\n" + result.content[0].text)
        warm = [(await timed_call(session, "analyze", analyze))[1] for _ in range(args.repeat)]

        tracked = {
            "model": args.model,
            "prompt": args.prompt,
            "raw": args.raw,
            "tokens": args.track,
        }
        result, _ = await timed_call(session, "track_tokens", tracked)
        print("\n# track_tokens\n" + result.content[0].text)
        result, _ = await timed_call(session, "model_info", {"model": args.model})
        print("\n# model_info\n" + result.content[0].text)
        result, _ = await timed_call(session, "loaded_models", {})
        print("\n# loaded_models\n" + result.content[0].text)

    print("\n# latency of analyze, measured by this client")
    print(f"  cold: {cold * 1000:8.1f} ms (includes loading the model)")
    print(f"  warm: {statistics.median(warm) * 1000:8.1f} ms median of {len(warm)}", end="")
    print(f" (min {min(warm) * 1000:.1f} ms, max {max(warm) * 1000:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default="demo", help="model id (default: demo)")
    parser.add_argument("-p", "--prompt", default="The capital of France is")
    parser.add_argument("-t", "--track", action="append", help="token to track (default: ' Paris')")
    parser.add_argument("--raw", action="store_true", help="no chat template")
    parser.add_argument("-n", "--repeat", type=int, default=10, help="warm analyze calls")
    args = parser.parse_args()
    args.track = args.track or [" Paris"]
    anyio.run(run, args)


if __name__ == "__main__":
    main()
