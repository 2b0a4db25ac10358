"""One rank's collectives in one request, kept in step even when the request stops part-way.

Every request runs the same sequence of collectives on every rank: per forward ("hop") the
stream from the previous rank, the stream to the next, then one broadcast from the last rank.
When a rank's work stops at the call's deadline or on a cancel (the engine's checks between
blocks and between chunks of cells raise ``CallInterrupted``), it cannot simply return: its
neighbours wait in a receive or a broadcast, and a collective left half-done would shift every
later one. So :meth:`Link.guard` finishes the rank's part of the sequence with zeros (the
other ranks, also past the deadline, stop at their next block and do the same) and answers
``expired`` instead of statistics; rank 0 then ends the call with the deadline's one line, and
the group stays in step for the next call. Only a rank that dies or hangs loses the group.

A stream is marked received or sent when the engine calls the stage's hook: with a deadline the
engine evaluates every block's output before it checks the clock, so a hook called before a
check has happened when that check stops the forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from lazarus_mcp.distributed import wire
from lazarus_mcp.distributed.split import Split
from lazarus_mcp.lens.taps import Stage
from lazarus_mcp.runtime.limits import CallInterrupted


@dataclass(frozen=True)
class Hop:
    """One forward of a request: the stream's shape between ranks and the broadcast's."""

    stream: tuple[int, ...]
    broadcast: tuple[int, ...]


@dataclass
class Link:
    group: Any
    split: Split
    hops: list[Hop]
    dtype: Any  # the stream's (the model's compute dtype)
    received: int = 0  # hops whose stream came in
    sent: int = 0  # hops whose stream went out
    broadcasts: int = 0
    pending: list[mx.array] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return int(self.group.rank())

    @property
    def is_last(self) -> bool:
        return self.rank == self.split.ranks - 1

    def stage(self) -> Stage:
        """The next hop's stage: this rank's blocks, its receive and send."""
        first, end = self.split.ranges[self.rank]
        rank = self.rank

        def send(hidden: mx.array) -> mx.array:
            self.sent += 1
            self.pending.append(wire.send_stream(self.group, hidden, rank + 1))
            return self.pending[-1]

        def receive(hidden: mx.array) -> mx.array:
            self.received += 1
            return wire.recv_stream(self.group, hidden, rank - 1)

        return Stage(
            first,
            end,
            receive=receive if rank > 0 else None,
            send=send if not self.is_last else None,
        )

    def broadcast(self, array: mx.array | None) -> mx.array:
        """The last rank's ``array`` (float32, this hop's broadcast shape) on every rank."""
        shape = self.hops[self.broadcasts].broadcast
        self.broadcasts += 1
        return wire.broadcast_from(self.group, self.split.ranks - 1, array, shape, mx.float32)

    def guard(self, work: Callable[[], bytes]) -> bytes:
        """``work()``, or, stopped part-way, the rest of the collectives with zeros and
        ``wire.expired``."""
        try:
            return work()
        except CallInterrupted as exc:
            self._finish()
            return wire.expired(str(exc))

    def _finish(self) -> None:
        for n, hop in enumerate(self.hops):
            if self.rank > 0 and self.received <= n:
                like = mx.zeros(hop.stream, dtype=self.dtype)
                mx.eval(wire.recv_stream(self.group, like, self.rank - 1))
                self.received += 1
            if not self.is_last and self.sent <= n:
                zeros = mx.zeros(hop.stream, dtype=self.dtype)
                mx.eval(wire.send_stream(self.group, zeros, self.rank + 1))
                self.sent += 1
            if self.broadcasts <= n:
                self.broadcast(None)


def link_for(group: Any, split: Split, hops: list[Hop], compute_dtype: str) -> Link:
    return Link(group, split, hops, getattr(mx, compute_dtype))
