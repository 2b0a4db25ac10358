"""Progress notifications for a tool call: a step at a time, with a heartbeat while one runs."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

import anyio

T = TypeVar("T")
HEARTBEAT_S = 1.0


class Context(Protocol):
    """What a tool call reports progress to (the SDK's session for the request)."""

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...


class Progress:
    """Progress notifications for one call; no-ops unless the client sent a progress token.

    Each step reports once at its start, then every ``HEARTBEAT_S`` while it runs, creeping
    toward the next step: progress must increase, and some clients reset their request timeout
    on each notification, which a model load of a minute needs.
    """

    def __init__(self, ctx: Context, total: int) -> None:
        self._ctx = ctx
        self.total = total
        self.done = 0

    async def report(self, progress: float, message: str) -> None:
        await self._ctx.report_progress(progress, self.total, message)

    async def step(self, message: str, job: Awaitable[T]) -> T:
        """Await ``job`` as the next step; its own exception propagates unwrapped."""
        start = self.done
        await self.report(start, message)
        finished = anyio.Event()
        outcome: list[Any] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._beat, start, message, finished)
            try:
                outcome.append(await job)
            except Exception as exc:  # re-raised below, outside the task group's wrapping
                outcome.append(exc)
            finally:
                finished.set()
        self.done += 1
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    async def _beat(self, start: int, message: str, finished: anyio.Event) -> None:
        began = time.monotonic()
        while not finished.is_set():
            with anyio.move_on_after(HEARTBEAT_S):
                await finished.wait()
            if not finished.is_set():
                elapsed = time.monotonic() - began
                await self.report(start + elapsed / (elapsed + 10), f"{message} ({elapsed:.0f} s)")

    async def finish(self, message: str) -> None:
        await self.report(self.total, message)
