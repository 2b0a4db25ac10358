"""Ranks 1..N-1: ``python -m lazarus_mcp.distributed.rank``, started by rank 0 (``launch``).

A rank joins the group, then answers rank 0's requests until told to stop: rank 0 announces each
one with a line on the rank's stdin, then broadcasts it; another line cancels the request in
progress (the rank stops at its next block and finishes the request's collectives, ``link``).
It exits at once, with one line on stderr, when rank 0 goes (its stdin closes, or the backend
loses a peer) or a request fails part-way: a rank never lingers without its rank 0.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time


def _read_stdin(requests: queue.Queue[bool], cancelled: threading.Event) -> None:
    """Rank 0's lines: ``r`` announces a request, ``c`` cancels the one in progress; the end
    of the file means rank 0 is gone. Read on a thread of its own, so a cancel arrives while
    the main thread works (the work checks ``cancelled`` between blocks, ``link.Link``).

    Between requests the main thread waits on ``requests`` (no CPU): the backend's receive
    polls, and a rank idling inside it would burn about 30% of a core (measured on this
    machine's ring backend)."""
    for line in sys.stdin.buffer:
        if line.startswith(b"c"):
            cancelled.set()
        else:
            requests.put(True)
    requests.put(False)


def _exit_when_orphaned() -> None:
    """While joining (``mx.distributed.init`` waits for every peer, without a timeout) and
    between requests: a rank whose parent (rank 0, or the ssh session) is gone exits."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main() -> None:
    _exit_when_orphaned()
    from lazarus_mcp.runtime.process import prepare_process

    prepare_process()
    import mlx.core as mx

    from lazarus_mcp.distributed import wire
    from lazarus_mcp.distributed.executor import RankState, one_line

    rank = os.environ.get("MLX_RANK", "?")
    try:
        # Rank 0 joins once every rank has said this (``launch.Launch.wait_joining``); stdout
        # then goes nowhere, so nothing a library prints can fill the pipe and block us.
        sys.stdout.write("joining\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        group = mx.distributed.init(
            strict=True, backend=os.environ.get("LAZARUS_SHARD_BACKEND", "ring")
        )
        state = RankState(group)
        requests: queue.Queue[bool] = queue.Queue()
        reader = threading.Thread(
            target=_read_stdin, args=(requests, state.cancelled), name="rank-0-lines", daemon=True
        )
        reader.start()
        with mx.stream(mx.cpu):
            while requests.get():
                # A cancel read before this request's line was for an earlier request.
                state.cancelled.clear()
                request = wire.from_json(wire.broadcast_bytes(group, None))
                if request is None or request.get("op") == "stop":
                    break
                reply = state.execute(request)
                wire.gather_bytes(group, reply)
    except Exception as exc:
        print(f"rank {rank}: {one_line(exc)}", file=sys.stderr, flush=True)
        os._exit(3)
    os._exit(0)


if __name__ == "__main__":
    main()
