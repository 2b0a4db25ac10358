"""A generation as it happens: an async iterator of steps, one MLX worker job per token.

Each token is its own job on the worker (``generation/run.py``), so the event loop hears of
every step as it lands (the MCP tool's progress notification per token), a cancelled caller
stops the run within one step (the job in flight stops at its next block, the next never
starts), and other calls on the worker are answered between two tokens. The call's deadline
spans the whole generation; when it passes, the tokens so far are the result
(``stop_reason: deadline``) unless there are none.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from lazarus_mcp.runtime import worker
from lazarus_mcp.runtime.limits import CallInterrupted, Interrupt
from lazarus_mcp.schema.generation import GenerationConfig, GenerationResult, GenerationStep

if TYPE_CHECKING:
    from lazarus_mcp.generation.run import GenerationRun
    from lazarus_mcp.modeling.loading import LoadedModel


def start(loaded: LoadedModel, prompt: str, config: GenerationConfig) -> GenerationRun:
    from lazarus_mcp.generation.run import start_generation

    return start_generation(loaded, prompt, config)


def _advance(run: GenerationRun) -> GenerationStep | None:
    return run.advance()


def _result(run: GenerationRun) -> GenerationResult:
    return run.result()


# Stop before the call's deadline with this share of its limit left (at most 1 s) and twice the
# last step's time, so the result is built and serialized inside the call's time, answering
# "deadline" rather than an error.
DEADLINE_RESERVE = 0.1
DEADLINE_RESERVE_MAX_S = 1.0


class GenerationStream:
    """``async for step in stream`` yields each :class:`GenerationStep` as the model writes it;
    ``await stream.result()`` then gives the whole :class:`GenerationResult` (running any steps
    not iterated yet)."""

    def __init__(
        self,
        start: Callable[[], Awaitable[GenerationRun]],
        interrupt: Interrupt,
    ) -> None:
        self._start = start
        self._interrupt = interrupt
        self._run: GenerationRun | None = None

    def _near_deadline(self, last_step_s: float) -> bool:
        left = self._interrupt.remaining()
        limit = self._interrupt.timeout
        if left is None or limit is None or self._interrupt.deadline is None:
            return False
        reserve = min(DEADLINE_RESERVE_MAX_S, DEADLINE_RESERVE * limit)
        return left < reserve + 2 * last_step_s

    def __aiter__(self) -> AsyncIterator[GenerationStep]:
        return self._steps()

    async def _steps(self) -> AsyncIterator[GenerationStep]:
        if self._run is None:
            self._run = await self._start()
        run = self._run
        last_step_s = 0.0
        while not run.finished:
            if run.steps and self._near_deadline(last_step_s):
                run.stop_at_deadline()
                return
            began = time.monotonic()
            try:
                step = await worker.run(_advance, run, interrupt=self._interrupt)
            except CallInterrupted:
                if self._interrupt.cancelled.is_set() or not run.steps:
                    raise
                run.stop_at_deadline()
                return
            last_step_s = time.monotonic() - began
            if step is None:
                return
            yield step

    async def result(self) -> GenerationResult:
        async for _ in self._steps():
            pass
        assert self._run is not None
        # Past the deadline the worker would refuse a job that carries it; this one is small.
        return await worker.run(_result, self._run, interrupt=Interrupt())
