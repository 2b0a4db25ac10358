"""Ranks 1..N-1: ``python -m lazarus_mcp.distributed.rank``, started by rank 0 (``launch``).

A rank joins the group, then answers rank 0's requests until told to stop. It exits at once,
with one line on stderr, when rank 0 goes (its stdin pipe closes, or the backend loses a peer)
or a request fails part-way: a rank never lingers without its rank 0.
"""

from __future__ import annotations

import os
import sys
import threading


def _exit_when_orphaned() -> None:
    """Rank 0 holds our stdin open; end of file means it is gone (even if it was killed)."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(1024):
                pass
        finally:
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
        group = mx.distributed.init(
            strict=True, backend=os.environ.get("LAZARUS_SHARD_BACKEND", "ring")
        )
        state = RankState(group)
        with mx.stream(mx.cpu):
            while True:
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
