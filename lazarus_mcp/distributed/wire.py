"""What crosses the wire between ranks, and how: bytes broadcast from rank 0, bytes gathered
from every rank, one array broadcast from the last rank, all as ``mx.distributed`` collectives
on the CPU stream (the ring backend's), evaluated at once.

Requests and answers are JSON and ``.npz`` archives read with ``allow_pickle=False``: nothing a
peer sends is ever executed. ``Traffic`` counts the bytes this rank put on the wire.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np


@dataclass
class Traffic:
    """Bytes this rank handed to the backend (payload sizes, not the ring's framing)."""

    sent: int = 0


TRAFFIC = Traffic()


def _eval(array: mx.array) -> mx.array:
    mx.eval(array)
    return array


def broadcast_bytes(group: Any, data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every rank (others pass None): an all-sum with zeros elsewhere."""
    mine = data if group.rank() == 0 and data is not None else b""
    counted = mx.distributed.all_sum(
        mx.array([len(mine)], dtype=mx.int32), group=group, stream=mx.cpu
    )
    size = int(np.array(_eval(counted))[0])
    if size == 0:
        return b""
    buffer = np.zeros(size, dtype=np.int32)
    if group.rank() == 0:
        buffer[:] = np.frombuffer(mine, dtype=np.uint8)
    summed = _eval(mx.distributed.all_sum(mx.array(buffer), group=group, stream=mx.cpu))
    TRAFFIC.sent += 4 * size if group.rank() == 0 else 0
    return np.array(summed).astype(np.uint8).tobytes()


def gather_bytes(group: Any, data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank."""
    sizes = _eval(
        mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int32), group=group, stream=mx.cpu)
    )
    lengths = [int(n) for n in np.array(sizes)]
    width = max(1, max(lengths))
    padded = np.zeros(width, dtype=np.uint8)
    padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    gathered = np.array(
        _eval(mx.distributed.all_gather(mx.array(padded), group=group, stream=mx.cpu))
    )
    TRAFFIC.sent += width
    rows = gathered.reshape(len(lengths), width)
    return [rows[r, :n].tobytes() for r, n in enumerate(lengths)]


def broadcast_from(
    group: Any, source: int, array: mx.array | None, shape: tuple[int, ...], dtype: Any
) -> mx.array:
    """``source``'s ``array`` on every rank: an all-sum with zeros elsewhere (x + 0 == x)."""
    mine = array if group.rank() == source and array is not None else mx.zeros(shape, dtype=dtype)
    if group.rank() == source:
        TRAFFIC.sent += mine.nbytes
    return _eval(mx.distributed.all_sum(mine, group=group, stream=mx.cpu))


def send_stream(group: Any, hidden: mx.array, dst: int) -> mx.array:
    TRAFFIC.sent += hidden.nbytes
    return mx.distributed.send(hidden, dst, group=group, stream=mx.cpu)


def recv_stream(group: Any, like: mx.array, src: int) -> mx.array:
    return mx.distributed.recv_like(like, src, group=group, stream=mx.cpu)


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def from_json(data: bytes) -> Any:
    return json.loads(data.decode()) if data else None


def pack(arrays: dict[str, np.ndarray], meta: Any) -> bytes:
    buffer = io.BytesIO()
    named = {"__meta__": np.frombuffer(to_json(meta), dtype=np.uint8), **arrays}
    np.savez(buffer, **named)  # type: ignore[arg-type]
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = from_json(arrays.pop("__meta__").tobytes())
    return arrays, meta


def expired(reason: str) -> bytes:
    """A rank's answer to a request it stopped at the call's deadline or on a cancel."""
    return to_json({"expired": reason})


def expired_reason(data: bytes) -> str | None:
    """The reason of an ``expired`` answer, else None (answers are JSON or ``.npz``)."""
    if not data.startswith(b'{"expired":'):
        return None
    return str(from_json(data)["expired"])
