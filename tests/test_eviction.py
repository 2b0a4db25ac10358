"""Evicting a model gives its memory back (examples/evict_cycles.py, short).

Before the fix every load grew the process by ~95 KiB that eviction never returned (MLX's
global random key, a lazy chain over every discarded initial weight): 40 cycles grew ~3.8 MiB.
"""

from __future__ import annotations

import anyio

from tests.conftest import PARITY


def test_load_evict_cycles_end_near_where_they_started() -> None:
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("evict", ROOT / "examples" / "evict_cycles.py")
    assert spec and spec.loader
    evict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evict)
    models = [str(PARITY / n) for n in ("llama", "mistral", "qwen3")]
    before, after = anyio.run(evict.cycles, 40, models)
    assert after - before < 1.5, f"{after - before:.2f} MiB over 40 cycles"
