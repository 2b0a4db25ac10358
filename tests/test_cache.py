"""The model cache: one load per model, failed loads forgotten, least-recently-used eviction."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

from lazarus_mcp.errors import ModelLoadError
from lazarus_mcp.runtime.cache import ModelCache
from tests.conftest import PARITY

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_load_once() -> None:
    cache = ModelCache(max_models=2)
    results = []

    async def get(name: str) -> None:
        results.append(await cache.get(str(PARITY / name)))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(get, "llama")
            tg.start_soon(get, "qwen3")
    assert cache.loads == 2
    assert len({id(r) for r in results}) == 2


async def test_failed_load_is_not_cached_and_can_be_retried(tmp_path: Path) -> None:
    cache = ModelCache()
    path = tmp_path / "model"
    shutil.copytree(PARITY / "llama", path)
    weights = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(ModelLoadError):
        await cache.get(str(path))
    assert cache.loaded() == []
    (path / "model.safetensors").write_bytes(weights)
    loaded = await cache.get(str(path))
    assert loaded.info.family == "llama"
    assert cache.loads == 1


async def test_least_recently_used_is_evicted() -> None:
    cache = ModelCache(max_models=2)
    llama = str(PARITY / "llama")
    await cache.get(llama)
    await cache.get(str(PARITY / "qwen3"))
    await cache.get(llama)  # now the most recently used
    await cache.get(str(PARITY / "phi3"))
    assert [m.info.family for m in cache.loaded()] == ["llama", "phi3"]
    assert cache.peek(str(PARITY / "qwen3")) is None


async def test_memory_budget_keeps_only_what_fits() -> None:
    first = await ModelCache().get(str(PARITY / "llama"))
    cache = ModelCache(max_models=10, memory_budget=int(first.nbytes * 1.5))
    await cache.get(str(PARITY / "llama"))
    await cache.get(str(PARITY / "mistral"))
    assert [m.info.family for m in cache.loaded()] == ["mistral"]
