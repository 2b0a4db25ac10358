"""The process-wide model cache: each checkpoint is loaded once, least-recently-used ones evicted.

Entries are keyed by the resolved checkpoint (its real directory; for a hub id the snapshot
directory, which names the revision) and the load options, so ``demo`` and the demo's path, or
a relative and an absolute path, share one load. Each caller gets the model under the name it
asked for.

Thread-safe and event-loop agnostic: entries are ``concurrent.futures.Future`` objects resolved by
the MLX worker thread, so concurrent requests for a model that is still loading share one load,
whichever event loop (or none) they come from. A load that fails leaves no entry behind.

A load is part of the call that asked for it: its worker job carries the call's deadline (its
clock starts when the load starts), and the loader checks it between tensors
(``modeling/loading.py``). A load past the deadline ends the call with the timeout error and
leaves no entry: the model is cached whole or not at all, and the next call, whose clock starts
with its own first job, is not charged for it. A caller that shared a load another call's
deadline stopped starts its own.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from lazarus_mcp.modeling.checkpoint import NotCachedError, resolve_model_path
from lazarus_mcp.modeling.options import LoadOptions
from lazarus_mcp.runtime import limits, worker

if TYPE_CHECKING:
    from lazarus_mcp.modeling.loading import LoadedModel

CacheKey = tuple[str, LoadOptions]


def _load_on_worker(model_id: str, options: LoadOptions) -> LoadedModel:
    # Process setup before the first MLX import of the process (the BLAS preload).
    from lazarus_mcp.runtime.process import prepare_process

    prepare_process()
    if options.sharded:
        from lazarus_mcp.distributed.pipeline import load_sharded

        return load_sharded(model_id, options)
    from lazarus_mcp.modeling.loading import load

    return load(model_id, options)


def _release_memory() -> None:
    """After an eviction, on the worker: collect the model's reference cycles and hand MLX's
    cached buffers back to the system."""
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


def _as_requested(loaded: LoadedModel, model_id: str) -> LoadedModel:
    if loaded.info.model_id == model_id:
        return loaded
    info = loaded.info.model_copy(update={"model_id": model_id})
    return dataclasses.replace(loaded, info=info)


def _loaded(future: Future[LoadedModel]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _stopped(future: Future[LoadedModel]) -> bool:
    """Whether a finished load was stopped by its call (deadline, cancellation), not refused."""
    return future.cancelled() or isinstance(future.exception(), limits.CallInterrupted)


class ModelCache:
    def __init__(
        self,
        max_models: int = 2,
        memory_budget: int | None = None,
        default_options: LoadOptions | None = None,
    ) -> None:
        # How a model asked for without options loads (``lazarus-mcp --shards N``).
        self.default_options = default_options or LoadOptions()
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self.memory_budget = memory_budget
        self.loads = 0
        self._entries: OrderedDict[CacheKey, Future[LoadedModel]] = OrderedDict()
        self._mutex = threading.Lock()

    def _load(self, model_id: str, options: LoadOptions) -> LoadedModel:
        loaded = _load_on_worker(model_id, options)
        with self._mutex:
            self.loads += 1
        return loaded

    def _future(
        self, path: Path, model_id: str, options: LoadOptions, call: limits.Interrupt | None
    ) -> tuple[Future[LoadedModel], bool]:
        """The entry's load and whether this caller started it (under ``call``'s deadline)."""
        key = (str(path), options)
        with self._mutex:
            future = self._entries.get(key)
            # A failed load whose entry is not dropped yet (its callback runs after its waiters
            # wake) is no entry.
            if future is not None and (not future.done() or _loaded(future)):
                self._entries.move_to_end(key)
                return future, False
            future = worker.submit(self._load, model_id, options, interrupt=call)
            self._entries[key] = future
        future.add_done_callback(lambda f: self._settle(key, f))
        return future, True

    def _settle(self, key: CacheKey, future: Future[LoadedModel]) -> None:
        with self._mutex:
            if not _loaded(future):
                if self._entries.get(key) is future:
                    del self._entries[key]
                return
            self._evict()

    def _evict(self) -> None:
        """Drop least-recently-used loaded models until within limits (the newest always stays)."""
        while True:
            done = [(k, f) for k, f in self._entries.items() if _loaded(f)]
            total = sum(f.result().nbytes for _, f in done)
            over_count = len(done) > self.max_models
            over_budget = self.memory_budget is not None and total > self.memory_budget
            if len(done) <= 1 or not (over_count or over_budget):
                return
            del self._entries[done[0][0]]
            worker.submit(_release_memory)

    async def get(self, model_id: str, options: LoadOptions | None = None) -> LoadedModel:
        try:
            path = resolve_model_path(model_id, download=False)
        except NotCachedError:
            # A hub download: slow, and not the event loop's work.
            path = await anyio.to_thread.run_sync(resolve_model_path, model_id)
        call = limits.current_call()
        while True:
            future, own = self._future(path, model_id, options or self.default_options, call)
            if not future.done():
                await anyio.to_thread.run_sync(wait, [future], abandon_on_cancel=True)
            if own or _loaded(future) or not _stopped(future):
                break
            # Another call's deadline (or its caller) stopped the load this one shared.
        # Loaded: no helper thread, so a cheap call never queues behind the thread limiter
        # while many calls wait on the MLX worker.
        return _as_requested(future.result(), model_id)

    def loaded(self) -> list[LoadedModel]:
        """Models in memory, least recently used first."""
        with self._mutex:
            futures = list(self._entries.values())
        return [f.result() for f in futures if _loaded(f)]

    def peek(self, model_id: str, options: LoadOptions | None = None) -> LoadedModel | None:
        """The loaded model, if in memory; never loads, downloads or raises."""
        try:
            path = resolve_model_path(model_id, download=False)
        except Exception:
            return None
        with self._mutex:
            future = self._entries.get((str(path), options or self.default_options))
        if future is None or not _loaded(future):
            return None
        return _as_requested(future.result(), model_id)


_default: ModelCache | None = None
_default_lock = threading.Lock()


def default_cache() -> ModelCache:
    """The cache shared by every analyzer of the process unless one is given."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelCache()
        return _default
