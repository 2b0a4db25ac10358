"""Load/evict cycles: does evicting a model give its memory back?

Three checkpoints through a cache that keeps two (``--max-models 2``), so every load evicts one;
the process's resident memory before and after the cycles (after a warm-up of 30)::

    python examples/evict_cycles.py            # 1,000 cycles (figure in docs/security.md)
    python examples/evict_cycles.py -n 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from lazarus_mcp.runtime.process import prepare_process

PARITY = Path(__file__).resolve().parent.parent.parent / "shared" / "parity"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def cycles(n: int, models: list[str]) -> tuple[float, float]:
    from lazarus_mcp.runtime import worker
    from lazarus_mcp.runtime.cache import ModelCache

    cache = ModelCache(max_models=2)
    for i in range(30):
        await cache.get(models[i % 3])
    worker.run_sync(lambda: None)  # the eviction's release job has run
    before = rss_mib()
    for i in range(n):
        await cache.get(models[i % 3])
    worker.run_sync(lambda: None)
    return before, rss_mib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="load/evict cycles")
    names = ["llama", "mistral", "qwen3"]
    parser.add_argument("--models", nargs=3, default=[str(PARITY / n) for n in names])
    options = parser.parse_args()
    prepare_process()
    before, after = anyio.run(cycles, options.n, options.models)
    per = (after - before) * 1024 / options.n
    print(
        f"{options.n} load/evict cycles: RSS {before:.1f} -> {after:.1f} MiB ({per:+.1f} KiB/cycle)"
    )


if __name__ == "__main__":
    main()
