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


@pytest.mark.parametrize("kind", ["safetensors", "gguf"])
async def test_a_load_past_its_calls_deadline_times_out_and_caches_nothing(
    tmp_path: Path, kind: str
) -> None:
    """A load is part of the call that asked for it: past the call's deadline it stops between
    tensors with the call's timeout error and leaves no entry (cached whole or not at all); the
    next call loads the model whole and is not charged for the stopped load."""
    from lazarus_mcp.runtime import limits
    from tests.checkpoints import build_checkpoint
    from tests.gguf_files import write_gguf

    if kind == "gguf":
        model = str(write_gguf(tmp_path / "gguf", "llama", "Q8_0"))
    else:
        model = str(build_checkpoint(tmp_path / "model"))
    cache = ModelCache()
    timeout = pytest.raises(limits.CallInterrupted, match=r"time limit of 0\.001 s")
    with limits.call_deadline(0.001), timeout:
        await cache.get(model)
    assert cache.loads == 0 and cache.loaded() == [] and cache.peek(model) is None
    with limits.call_deadline(60) as call:
        loaded = await cache.get(model)
        assert call.remaining() is not None and call.remaining() > 50  # type: ignore[operator]
    assert cache.loads == 1 and cache.peek(model) is loaded


async def test_a_load_shared_with_a_call_past_its_deadline_is_loaded_for_the_other(
    tmp_path: Path,
) -> None:
    """The call that started a load times out; a caller that shared it (no deadline of its own)
    starts its own load and gets the model."""
    from lazarus_mcp.runtime import limits
    from tests.checkpoints import build_checkpoint

    model = str(build_checkpoint(tmp_path / "model"))
    cache = ModelCache()
    outcomes: dict[str, object] = {}

    async def hurried() -> None:
        with limits.call_deadline(0.001):
            try:
                await cache.get(model)
            except limits.CallInterrupted as exc:
                outcomes["hurried"] = exc

    async def patient() -> None:
        outcomes["patient"] = await cache.get(model)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hurried)
        await anyio.sleep(0.01)  # the hurried call has started the load
        tg.start_soon(patient)
    assert isinstance(outcomes["hurried"], limits.CallInterrupted)
    assert outcomes["patient"] is cache.peek(model) and cache.loads == 1
