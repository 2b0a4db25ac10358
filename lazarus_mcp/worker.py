"""One dedicated thread for all MLX work of the process.

MLX streams are per thread and arrays made on one thread have failed on another, so every model
load and every forward pass runs here, one at a time, while the event loop stays free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lazarus-mlx")
        return _executor


def submit(fn: Callable[..., T], *args: object) -> Future[T]:
    return _get_executor().submit(fn, *args)


def run_sync(fn: Callable[..., T], *args: object) -> T:
    """Run on the MLX thread and wait (for synchronous callers such as scripts)."""
    return submit(fn, *args).result()


async def run(fn: Callable[..., T], *args: object) -> T:
    """Run on the MLX thread without blocking the event loop.

    Waiting happens on an anyio helper thread; a cancelled caller stops waiting at once, while
    the MLX job (which cannot be interrupted) finishes on its own.
    """
    future = submit(fn, *args)
    return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
