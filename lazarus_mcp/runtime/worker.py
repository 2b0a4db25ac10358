"""One dedicated thread for all MLX work of the process.

MLX streams are per thread and arrays made on one thread have failed on another, so every model
load and every forward pass runs here, one at a time, while the event loop stays free.

Each job carries an :class:`~lazarus_mcp.runtime.limits.Interrupt`: its deadline and whether its
caller gave up. The forward pass checks it between blocks, so a call past its deadline, or one
whose caller cancelled or disconnected, stops there and the next job starts; a job whose caller
gave up before it started never runs.

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

from lazarus_mcp.runtime.limits import Interrupt, set_interrupt

T = TypeVar("T")

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], Interrupt | None]
_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_pending = 0


def _serve() -> None:
    global _pending
    while True:
        future, fn, args, interrupt = _jobs.get()
        with _lock:
            _pending -= 1
        if interrupt is not None and interrupt.cancelled.is_set():
            future.cancel()
        if not future.set_running_or_notify_cancel():
            continue
        set_interrupt(interrupt)
        try:
            if interrupt is not None:
                interrupt.begin()  # the call's clock starts with its first job, not in the queue
                interrupt.check()
            result = fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
            del result
        finally:
            set_interrupt(None)
        # Drop references so finished jobs' arrays can be freed while the thread waits.
        del future, fn, args, interrupt


def _ensure_thread() -> None:
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name="lazarus-mlx", daemon=True)
            _thread.start()


def pending() -> int:
    """Jobs submitted and not yet started."""
    with _lock:
        return _pending


def submit(fn: Callable[..., T], *args: object, interrupt: Interrupt | None = None) -> Future[T]:
    global _pending
    _ensure_thread()
    future: Future[T] = Future()
    with _lock:
        _pending += 1
    _jobs.put((future, fn, args, interrupt))
    return future


def run_sync(fn: Callable[..., T], *args: object) -> T:
    """Run on the MLX thread and wait (for synchronous callers such as scripts)."""
    return submit(fn, *args).result()


async def run(fn: Callable[..., T], *args: object, interrupt: Interrupt | None = None) -> T:
    """Run on the MLX thread without blocking the event loop.

    Waiting happens on an anyio helper thread. A cancelled caller stops waiting at once and
    interrupts the job: it never starts if it is still queued, and a forward pass stops at its
    next block.
    """
    interrupt = interrupt if interrupt is not None else Interrupt()
    future = submit(fn, *args, interrupt=interrupt)
    try:
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
    except BaseException:
        if not future.done():
            interrupt.cancel()
            future.cancel()
        raise
