"""Rank 0's side of the shard group: start the ranks, join them, run requests, watch them.

Every request carries the call's deadline to the ranks, which stop by themselves when it passes
(between blocks, between chunks of cells) and finish their collectives with zeros (``link``):
the call ends with the deadline's line and the group stays usable; a cancelled call is passed
on to the ranks the same way (a line on their stdin). A watchdog thread covers the rest: a rank
that exits, or ranks silent ``GRACE`` seconds past the request's time (a rank that hangs or
cannot be reached), stop every rank's process group; rank 0's pending receive then fails
("connection to a peer was lost"), and the call ends with one line naming the rank and why. The
group is then lost for the life of the process: ranks that missed part of a request cannot be
brought back in step, so every later call says so until the process (the CLI, the MCP server)
is restarted. Nothing outlives rank 0: the ranks' stdin
closes with it and they exit (``rank.py``); ``stop`` runs at exit.

``mx.distributed.init`` waits for every peer with no timeout (holding the GIL), so rank 0 calls
it only once every rank has announced it is joining.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lazarus_mcp.distributed import launch, wire
from lazarus_mcp.distributed.executor import RankState, one_line
from lazarus_mcp.distributed.hosts import Hosts
from lazarus_mcp.errors import InvalidRequestError, LazarusError
from lazarus_mcp.runtime.limits import CallInterrupted
from lazarus_mcp.runtime.limits import interrupt as current_interrupt

START_TIMEOUT = 120.0
REQUEST_TIMEOUT = 600.0  # without a call deadline
# How long past a request's time the ranks may take to stop by themselves and answer
# ``expired`` (they check the deadline after every block) before the group is taken as lost.
GRACE = 5.0
POLL = 0.1


class ShardGroupLost(LazarusError):
    """A rank died, hung or could not be reached; the group is stopped until a restart."""


class ShardGroup:
    """Ranks 0..N-1 of one ``mx.distributed`` group; this process is rank 0."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self.launch: launch.Launch | None = None
        self.group: Any = None
        self.state: RankState | None = None
        self.lost: str | None = None
        self._next_key = 0
        self._alive: dict[int, int] = {}  # key -> holders on rank 0

    @property
    def size(self) -> int:
        return self.hosts.size

    def start(self) -> None:
        self.launch = launch.start(self.hosts)
        atexit.register(self.stop)
        os.environ.update(self.launch.rank0_env)
        os.environ["LAZARUS_SHARD_BACKEND"] = self.hosts.backend
        # ``mx.distributed.init`` blocks without a timeout and holds the GIL while it waits
        # for a peer (no other thread of this process runs meanwhile), so rank 0 joins only
        # once every rank is alive and joining; a rank that dies in the milliseconds between
        # is the one case left to the backend.
        outcome = self.launch.wait_joining(START_TIMEOUT)
        if isinstance(outcome, launch.RankProcess):
            self._lose(
                f"rank {outcome.rank} on {outcome.host} exited before joining "
                f"({self._exit_words(outcome)})"
            )
        elif outcome is not None:
            self._lose(f"the ranks did not start joining within {START_TIMEOUT:g} s")
        if self.lost is not None:
            raise ShardGroupLost(self._lost_line())
        import mlx.core as mx

        try:
            joined = mx.distributed.init(strict=True, backend=self.hosts.backend)
        except Exception as exc:
            self._lose(f"joining the group failed: {one_line(exc)}")
            raise ShardGroupLost(self._lost_line()) from None
        self.group = joined
        if self.group.size() != self.size:
            self._lose(f"the group has {self.group.size()} ranks, not {self.size}")
            raise ShardGroupLost(self._lost_line())
        self.state = RankState(self.group)

    def new_key(self) -> int:
        self._next_key += 1
        return self._next_key

    def hold(self, key: int) -> None:
        self._alive[key] = self._alive.get(key, 0) + 1

    def release(self, key: int) -> None:
        self._alive.pop(key, None)

    def request(self, request: dict[str, Any], timeout: float | None = None) -> list[bytes]:
        """Broadcast ``request``, run rank 0's part, and gather every rank's answer.

        The ranks work under the call's deadline too (``budget``); a request they stopped at it
        (or on a cancel) comes back ``expired`` from every rank that stopped, with the group in
        step, and ends the call with the deadline's line (``CallInterrupted``)."""
        if self.lost is not None:
            raise ShardGroupLost(self._lost_line())
        assert self.state is not None and self.launch is not None
        job = current_interrupt()
        budget = job.remaining() if job is not None else None
        request = {
            **request,
            "alive": sorted(self._alive),
            "budget": budget,
            "limit": job.timeout if job is not None else None,
        }
        with self._watch(timeout):
            self.launch.announce()
            data = wire.broadcast_bytes(self.group, wire.to_json(request))
            mine = self.state.execute(wire.from_json(data))
            answers = wire.gather_bytes(self.group, mine)
        reasons = [r for r in map(wire.expired_reason, answers) if r is not None]
        if reasons:
            # Rank 0's own reason first (it knows whether its caller cancelled).
            raise CallInterrupted(reasons[0])
        return answers

    @contextmanager
    def _watch(self, timeout: float | None) -> Iterator[None]:
        """Lose the group when a rank exits, or when the ranks are silent ``GRACE`` seconds
        past the request's time: ranks that only ran out of time stop by themselves
        (``link``), a cancelled call is passed on to them (``launch.Launch.cancel``)."""
        job = current_interrupt()
        limit = timeout or (job.remaining() if job is not None else None) or REQUEST_TIMEOUT
        done = threading.Event()

        def watch() -> None:
            assert self.launch is not None
            end = time.monotonic() + limit + GRACE
            cancel_sent = False
            while not done.wait(POLL):
                dead = self.launch.first_dead()
                if dead is not None:
                    self._lose(f"rank {dead.rank} on {dead.host} exited ({self._exit_words(dead)})")
                elif job is not None and job.cancelled.is_set() and not cancel_sent:
                    self.launch.cancel()
                    cancel_sent = True
                    end = min(end, time.monotonic() + GRACE)
                elif time.monotonic() > end:
                    self._lose(
                        f"no answer from the ranks within {limit + GRACE:g} s (a rank hangs or "
                        "cannot be reached)"
                    )
                if self.lost is not None:
                    return

        watcher = threading.Thread(target=watch, name="lazarus-shard-watch", daemon=True)
        watcher.start()
        try:
            yield
        except BaseException as exc:
            done.set()
            watcher.join()
            if self.lost is None:
                self._lose(self._blame(exc))
            raise ShardGroupLost(self._lost_line()) from None
        finally:
            done.set()
        if self.lost is not None:
            raise ShardGroupLost(self._lost_line())

    def traffic(self) -> list[int]:
        """Bytes each rank has handed to the backend so far (``wire.Traffic``)."""
        return [int(wire.from_json(r)["sent"]) for r in self.request({"op": "ping"})]

    def _blame(self, exc: BaseException) -> str:
        """Why a request failed: a rank that exited (the backend's "peer lost" comes first,
        the exit is seen a moment later), else the error itself."""
        assert self.launch is not None
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            dead = self.launch.first_dead()
            if dead is not None:
                return f"rank {dead.rank} on {dead.host} exited ({self._exit_words(dead)})"
            time.sleep(POLL)
        return one_line(exc)

    def _exit_words(self, dead: launch.RankProcess) -> str:
        code = dead.exit_code()
        words = dead.last_words()
        how = f"signal {-code}" if code is not None and code < 0 else f"code {code}"
        return f"{how}: {words}" if words else how

    def _lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        self.stop()

    def _lost_line(self) -> str:
        return (
            f"the shard group is lost: {self.lost}; its ranks were stopped; restart lazarus to "
            "use --shards again"
        )

    def stop(self) -> None:
        """Stop every rank (idempotent)."""
        if self.launch is not None:
            self.launch.stop()


_GROUP: ShardGroup | None = None
_LOCK = threading.Lock()


def shard_group(hosts: Hosts) -> ShardGroup:
    """This process's group (one per process: ``mx.distributed.init`` is process-wide),
    started on first use. Runs on the MLX worker thread."""
    global _GROUP
    with _LOCK:
        if _GROUP is None:
            group = ShardGroup(hosts)
            _GROUP = group
            group.start()
        elif _GROUP.hosts != hosts:
            raise InvalidRequestError(
                f"this process already runs a shard group of {_GROUP.size} ranks "
                f"({_GROUP.hosts.backend}); one group per process"
            )
        if _GROUP.lost is not None:
            raise ShardGroupLost(_GROUP._lost_line())
        return _GROUP


def current_group() -> ShardGroup | None:
    return _GROUP
