"""One dedicated thread for all MLX work of the process.

MLX streams are per thread and arrays made on one thread have failed on another, so every model
load and every forward pass runs here, one at a time, while the event loop stays free.

The thread is a daemon that lives as long as the process: it is never joined or torn down at
exit, because destroying MLX's per-thread state while the process shuts down has aborted the
interpreter ("terminate called without an active exception").
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")

_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
    queue.SimpleQueue()
)
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _serve() -> None:
    while True:
        future, fn, args = _jobs.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
            del result
        # Drop references so finished jobs' arrays can be freed while the thread waits.
        del future, fn, args


def _ensure_thread() -> None:
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name="lazarus-mlx", daemon=True)
            _thread.start()


def submit(fn: Callable[..., T], *args: object) -> Future[T]:
    _ensure_thread()
    future: Future[T] = Future()
    _jobs.put((future, fn, args))
    return future


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
