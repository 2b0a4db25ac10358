"""The process-wide model cache: each model is loaded once, least-recently-used ones are evicted.

Thread-safe and event-loop agnostic: entries are ``concurrent.futures.Future`` objects resolved by
the MLX worker thread, so concurrent requests for a model that is still loading share one load,
whichever event loop (or none) they come from. A load that fails leaves no entry behind.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future

import anyio.to_thread

from lazarus_mcp import worker
from lazarus_mcp.loading import LoadedModel, LoadOptions, load

CacheKey = tuple[str, LoadOptions]


class ModelCache:
    def __init__(self, max_models: int = 2, memory_budget: int | None = None) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self.memory_budget = memory_budget
        self.loads = 0
        self._entries: OrderedDict[CacheKey, Future[LoadedModel]] = OrderedDict()
        self._mutex = threading.Lock()

    def _load(self, model_id: str, options: LoadOptions) -> LoadedModel:
        loaded = load(model_id, options)
        with self._mutex:
            self.loads += 1
        return loaded

    def _future(self, model_id: str, options: LoadOptions) -> Future[LoadedModel]:
        key = (model_id, options)
        with self._mutex:
            future = self._entries.get(key)
            if future is not None:
                self._entries.move_to_end(key)
                return future
            future = worker.submit(self._load, model_id, options)
            self._entries[key] = future
        future.add_done_callback(lambda f: self._settle(key, f))
        return future

    def _settle(self, key: CacheKey, future: Future[LoadedModel]) -> None:
        with self._mutex:
            if future.exception() is not None:
                if self._entries.get(key) is future:
                    del self._entries[key]
                return
            self._evict()

    def _evict(self) -> None:
        """Drop least-recently-used loaded models until within limits (the newest always stays)."""
        while True:
            done = [(k, f) for k, f in self._entries.items() if f.done() and not f.exception()]
            total = sum(f.result().nbytes for _, f in done)
            over_count = len(done) > self.max_models
            over_budget = self.memory_budget is not None and total > self.memory_budget
            if len(done) <= 1 or not (over_count or over_budget):
                return
            del self._entries[done[0][0]]

    async def get(self, model_id: str, options: LoadOptions | None = None) -> LoadedModel:
        future = self._future(model_id, options or LoadOptions())
        if future.done():
            # Loaded: no helper thread, so a cheap call never queues behind the thread limiter
            # while many calls wait on the MLX worker.
            return future.result()
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)

    def loaded(self) -> list[LoadedModel]:
        """Models in memory, least recently used first."""
        with self._mutex:
            futures = list(self._entries.values())
        return [f.result() for f in futures if f.done() and not f.exception()]

    def peek(self, model_id: str, options: LoadOptions | None = None) -> LoadedModel | None:
        with self._mutex:
            future = self._entries.get((model_id, options or LoadOptions()))
        if future is None or not future.done() or future.exception():
            return None
        return future.result()


_default: ModelCache | None = None


def default_cache() -> ModelCache:
    """The cache shared by every analyzer of the process unless one is given."""
    global _default
    if _default is None:
        _default = ModelCache()
    return _default
