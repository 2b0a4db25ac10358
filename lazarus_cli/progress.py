"""A progress line on the terminal while a model loads and a batch runs.

Only when stderr is a terminal: a redirected or captured stderr (CI, pipes, the tests) gets no
carriage returns and no bar. The line is redrawn in place and erased when done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable
from typing import TextIO, TypeVar

import anyio

T = TypeVar("T")
_SPIN = "|/-\\"
_WIDTH = 28


class TerminalProgress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._began = time.monotonic()

    def _draw(self, text: str) -> None:
        if self.enabled:
            self._stream.write("\r\033[K" + text)
            self._stream.flush()

    def clear(self) -> None:
        self._draw("")

    async def wait(self, message: str, job: Awaitable[T]) -> T:
        """Await ``job`` with a spinner and the seconds elapsed."""
        if not self.enabled:
            return await job
        began = time.monotonic()
        result: list[T] = []

        async def run(scope: anyio.CancelScope) -> None:
            result.append(await job)
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, tg.cancel_scope)
            tick = 0
            while True:
                self._draw(f"{_SPIN[tick % 4]} {message} ({time.monotonic() - began:.0f} s)")
                tick += 1
                await anyio.sleep(0.25)
        self.clear()
        return result[0]

    def note(self, text: str) -> None:
        """A line of progress in words (a step of a call)."""
        self._draw(f"{text} ({time.monotonic() - self._began:.0f} s)")

    async def update(self, done: int, total: int, unit: str = "prompts") -> None:
        """A bar for ``unit`` done out of ``total`` (awaited by ``analyze_batch``, and per
        token by ``generate``)."""
        filled = round(_WIDTH * done / max(1, total))
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._draw(f"[{bar}] {done}/{total} {unit} ({time.monotonic() - self._began:.0f} s)")
        if done >= total:
            self.clear()
