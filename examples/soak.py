"""Soak the installed ``lazarus-mcp`` over stdio and streamable HTTP, as untrusted agents would.

Mixed calls (good and bad, two models, some concurrent, some cancelled, some clients dropped
mid-call) against one server per transport, with the server's resident memory sampled from
/proc. Each good response is matched to its request (the echoed model and prompt, and the same
result as the first time the same request was answered); a missing or mismatched response is
counted as lost. The full run (the figures in docs/security.md)::

    python examples/soak.py                       # 1,200 calls: 600 over stdio, 600 over HTTP
    python examples/soak.py --calls 100 --json    # shorter; the test suite runs 60

Exit status 1 if anything was lost or memory grew past ``--max-growth-mib``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
PARITY = Path(os.environ.get("LAZARUS_PARITY_DIR") or ROOT.parent / "shared" / "parity")
PROMPTS = ["The capital of France is", "2 + 2 =", "Hello world", "one two three four"]


@dataclass
class Report:
    transport: str
    calls: int = 0
    good: int = 0
    bad_inputs: int = 0
    cancelled: int = 0
    dropped_clients: int = 0
    concurrent_batches: int = 0
    lost: int = 0
    mismatched: int = 0
    rss_after_warmup_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_end_mib: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def server_command() -> str:
    beside = Path(sys.executable).parent / "lazarus-mcp"
    found = str(beside) if beside.is_file() else shutil.which("lazarus-mcp")
    if found is None:
        sys.exit("lazarus-mcp is not installed: pip install -e .")
    return found


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def child_server_pid() -> int:
    """The ``lazarus-mcp`` this process spawned (the stdio client does not say its pid)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"lazarus-mcp" in cmdline:
            return int(entry.name)
    return 0


def hostile_models(tmp: Path, source: Path) -> list[tuple[str, dict[str, Any], str]]:
    """Checkpoints from issue 10's table, as (tool, args, part of the expected message)."""
    cases = []

    def copy(name: str) -> Path:
        return Path(shutil.copytree(source, tmp / name))

    lying = copy("lying")
    config = json.loads((lying / "config.json").read_text())
    (lying / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 100_000}))
    cases.append(("model_info", {"model": str(lying)}, "layers"))
    zero = copy("zero")
    (zero / "tokenizer.json").unlink()
    (zero / "tokenizer.json").symlink_to("/dev/zero")
    cases.append(("model_info", {"model": str(zero)}, "outside"))
    fifo = copy("fifo")
    (fifo / "tokenizer.json").unlink()
    os.mkfifo(fifo / "tokenizer.json")
    cases.append(("model_info", {"model": str(fifo)}, "regular"))
    deep = copy("deep")
    (deep / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    cases.append(("model_info", {"model": str(deep)}, "nested"))
    bomb = copy("bomb")
    tokenizer_config = json.loads((bomb / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = "{{ 'a' * 3000000000 }}"
    (bomb / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (bomb / "chat_template.jinja").unlink(missing_ok=True)
    cases.append(("analyze", {"model": str(bomb), "prompt": "Hi"}, "raw"))
    remote = copy("remote")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"A": "x.Y"}}))
    cases.append(("model_info", {"model": str(remote)}, "never executes"))
    return cases


def bad_inputs(models: list[str]) -> list[tuple[str, dict[str, Any], str]]:
    m = models[0]
    return [
        ("analyze", {"model": m, "prompt": "x" * 300_000}, "max_prompt_chars"),
        ("analyze", {"model": m, "prompt": "one two three " * 2500, "raw": True}, "tokens"),
        ("analyze", {"model": m, "prompt": "Hi", "embedding_scale": 1e308}, "embedding_scale"),
        ("analyze", {"model": m, "prompt": "Hi", "embedding_scale": "inf"}, "embedding_scale"),
        ("track_tokens", {"model": m, "prompt": "Hi", "tokens": ["x" * 10**5] * 32}, "characters"),
        ("analyze", {"model": "a" * 5000, "prompt": "Hi"}, "characters"),
        ("analyze", {"model": m, "prompt": "Hi", "layers": [99]}, "out of range"),
        ("analyze", {"model": m, "prompt": "Hi", "top_k": 0}, "top_k"),
        ("analyze", {"model": m, "prompt": "Hi", "lyaers": [1]}, "unknown argument"),
        ("analyze", {"model": "/proc/self", "prompt": "Hi"}, "model"),
        ("analyze", {"model": "../../../../etc", "prompt": "Hi"}, "model"),
        ("model_info", {"model": "/dev/zero"}, "model"),
        ("analyze", {"model": m, "prompt": ""}, "prompt"),
        ("loaded_models", {"all": True}, "unknown argument"),
    ]  # fmt: skip


def good_call(rng: random.Random, models: list[str]) -> tuple[str, dict[str, Any]]:
    model = rng.choice(models)
    prompt = rng.choice(PROMPTS)
    kind = rng.randrange(10)
    if kind < 5:
        extra = rng.choice(
            [{}, {"layer_strategy": "all", "top_k": 7}, {"layers": [0, -1], "raw": True}]
        )
        return "analyze", {"model": model, "prompt": prompt, **extra}
    if kind < 8:
        return "track_tokens", {"model": model, "prompt": prompt, "tokens": [" Paris", "2"]}
    if kind < 9:
        return "model_info", {"model": model}
    return "loaded_models", {}


class Checker:
    """Matches each response to its request; the same request must give the same result."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.seen: dict[str, Any] = {}

    def good(self, tool: str, args: dict[str, Any], result: Any) -> None:
        data = result.structured_content
        if result.is_error or not isinstance(data, dict):
            self.lost(f"{tool} failed: {result.content[0].text if result.content else '?'}")
            return
        echoed = {
            "analyze": lambda: (data["model"]["model_id"], data["prompt"]),
            "track_tokens": lambda: (data["model_id"], data["prompt"]),
            "model_info": lambda: (data["model_id"], None),
        }.get(tool)
        if echoed is not None and echoed() != (args.get("model"), args.get("prompt")):
            self.report.mismatched += 1
            self.report.problems.append(f"{tool}: response for another request")
            return
        if tool in ("analyze", "track_tokens"):
            key = json.dumps([tool, args], sort_keys=True)
            first = self.seen.setdefault(key, data)
            if first != data:
                self.report.mismatched += 1
                self.report.problems.append(f"{tool}: result differs from the first answer")
                return
        self.report.good += 1

    def bad(self, tool: str, expected: str, result: Any) -> None:
        text = result.content[0].text if result.content else ""
        if not result.is_error or expected not in text or "\n" in text:
            self.lost(f"{tool}: expected an error with {expected!r}, got {text[:120]!r}")
            return
        self.report.bad_inputs += 1

    def lost(self, problem: str) -> None:
        self.report.lost += 1
        self.report.problems.append(problem)


async def soak(
    connect: Callable[[], Any],
    pid: Callable[[], int],
    report: Report,
    calls: int,
    models: list[str],
    hostile: list[tuple[str, dict[str, Any], str]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    checker = Checker(report)
    bad = bad_inputs(models) + hostile
    began = time.monotonic()
    async with connect() as client:
        for model in models:  # warm up: both models loaded
            checker.good(
                "model_info",
                {"model": model},
                await client.call_tool("model_info", {"model": model}),
            )
            for prompt in PROMPTS:
                await client.call_tool("analyze", {"model": model, "prompt": prompt})
        report.calls += len(models) * (1 + len(PROMPTS))
        report.rss_after_warmup_mib = report.rss_peak_mib = rss_mib(pid())
        while report.calls < calls:
            roll = rng.random()
            if roll < 0.25:
                tool, args, expected = rng.choice(bad)
                checker.bad(tool, expected, await client.call_tool(tool, args))
                report.calls += 1
            elif roll < 0.35:
                batch = [good_call(rng, models) for _ in range(rng.randint(3, 8))]
                async with anyio.create_task_group() as tg:
                    for tool, args in batch:

                        async def one(tool: str = tool, args: dict[str, Any] = args) -> None:
                            checker.good(tool, args, await client.call_tool(tool, args))

                        tg.start_soon(one)
                report.calls += len(batch)
                report.concurrent_batches += 1
            elif roll < 0.40:
                tool, args = good_call(rng, models)
                with anyio.move_on_after(rng.choice([0.0, 0.005, 0.02])):
                    await client.call_tool(tool, args)
                report.calls += 1
                report.cancelled += 1
            elif roll < 0.42:
                # A second client that goes away mid-call (it is dropped while waiting).
                tool, args = good_call(rng, models)
                with anyio.move_on_after(0.01):
                    async with connect() as doomed:
                        await doomed.call_tool(tool, args)
                report.calls += 1
                report.dropped_clients += 1
            else:
                tool, args = good_call(rng, models)
                checker.good(tool, args, await client.call_tool(tool, args))
                report.calls += 1
            if report.calls % 25 < 1:
                report.rss_peak_mib = max(report.rss_peak_mib, rss_mib(pid()))
        # After everything: the server still answers a good call.
        tool, args = "analyze", {"model": models[0], "prompt": PROMPTS[0]}
        checker.good(tool, args, await client.call_tool(tool, args))
        report.calls += 1
        report.rss_end_mib = rss_mib(pid())
        report.rss_peak_mib = max(report.rss_peak_mib, report.rss_end_mib)
    report.seconds = round(time.monotonic() - began, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def http_server(args: list[str]) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    cmd = [server_command(), "--transport", "streamable-http", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await anyio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def run(options: argparse.Namespace) -> list[Report]:
    server_args = ["--log-level", "ERROR", "--max-models", "2"]
    models = options.models
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        hostile = hostile_models(Path(tmp), Path(models[0]))
        if "stdio" in options.transports:
            report = Report("stdio")
            params = StdioServerParameters(command=server_command(), args=server_args)
            await soak(lambda: Client(params), child_server_pid, report,
                       options.calls // len(options.transports), models, hostile,
                       options.seed)  # fmt: skip
            reports.append(report)
        if "http" in options.transports:
            report = Report("http")
            async with http_server(server_args) as (url, pid):
                await soak(lambda: Client(url), lambda: pid, report,
                           options.calls // len(options.transports), models, hostile,
                           options.seed + 1)  # fmt: skip
            reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1200, help="calls in all (split by transport)")
    parser.add_argument(
        "--transports", nargs="+", default=["stdio", "http"], choices=["stdio", "http"]
    )
    parser.add_argument(
        "--models", nargs=2, default=[str(PARITY / "llama"), str(PARITY / "gemma2")]
    )
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--max-growth-mib", type=float, default=32.0)
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    options = parser.parse_args(argv)
    reports = anyio.run(run, options)
    failed = False
    for report in reports:
        growth = report.rss_end_mib - report.rss_after_warmup_mib
        failed |= bool(report.lost or report.mismatched) or growth > options.max_growth_mib
        if options.json:
            continue
        print(
            f"{report.transport}: {report.calls} calls in {report.seconds} s ({report.good} good, "
            f"{report.bad_inputs} bad inputs refused, {report.cancelled} cancelled, "
            f"{report.dropped_clients} clients dropped mid-call, {report.concurrent_batches} "
            f"concurrent batches); lost {report.lost}, mismatched {report.mismatched}; server RSS "
            f"{report.rss_after_warmup_mib:.0f} MiB after warm-up, peak {report.rss_peak_mib:.0f}, "
            f"end {report.rss_end_mib:.0f} ({growth:+.1f} MiB)"
        )
        for problem in report.problems[:10]:
            print(f"  {problem}")
    if options.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
