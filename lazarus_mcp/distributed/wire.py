"""What crosses the wire between ranks, and how: bytes broadcast from rank 0, bytes gathered
from every rank, one array broadcast from the last rank, all as ``mx.distributed`` collectives
on the CPU stream (the ring backend's), evaluated at once.

Requests are JSON; answers a JSON header and raw numeric arrays (``pack``): nothing a peer
sends is ever executed. ``Traffic`` counts the bytes this rank put on the wire.
"""

from __future__ import annotations

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
    # Four bytes to an int32 word: integer sums with zeros are exact whatever the bits.
    words = np.zeros(-(-size // 4), dtype="<i4")
    if group.rank() == 0:
        words.view(np.uint8)[:size] = np.frombuffer(mine, dtype=np.uint8)
    summed = _eval(mx.distributed.all_sum(mx.array(words), group=group, stream=mx.cpu))
    TRAFFIC.sent += words.nbytes if group.rank() == 0 else 0
    return np.array(summed).astype("<i4").tobytes()[:size]


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


# Answers: this magic, the header's length (4 bytes), a JSON header (``meta`` and each array's
# name, dtype, shape), then the arrays' bytes. Only numeric dtypes are read back, each array's
# size checked against its shape: nothing a peer sends is executed or trusted for a length.
# (``.npz`` was the first format: its zip headers were most of a generation step's bytes.)
MAGIC = b"LZW1"
_KINDS = "biuf"


def pack(arrays: dict[str, np.ndarray], meta: Any) -> bytes:
    items = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    described = [[name, a.dtype.str, list(a.shape)] for name, a in items.items()]
    header = to_json({"meta": meta, "arrays": described})
    body = b"".join(a.tobytes() for a in items.values())
    return MAGIC + len(header).to_bytes(4, "little") + header + body


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], Any]:
    if not data.startswith(MAGIC):
        raise ValueError("not a packed answer")
    length = int.from_bytes(data[4:8], "little")
    header = from_json(data[8 : 8 + length])
    offset = 8 + length
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_str, shape in header["arrays"]:
        dtype = np.dtype(dtype_str)
        if dtype.kind not in _KINDS or dtype.hasobject:
            raise ValueError(f"packed array {name!r} has dtype {dtype_str!r}")
        count = int(np.prod(shape, dtype=np.int64))
        end = offset + count * dtype.itemsize
        if count < 0 or end > len(data):
            raise ValueError(f"packed array {name!r} runs past the answer")
        arrays[str(name)] = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(
            shape
        )
        offset = end
    if offset != len(data):
        raise ValueError("a packed answer has bytes after its arrays")
    return arrays, header["meta"]


def expired(reason: str) -> bytes:
    """A rank's answer to a request it stopped at the call's deadline or on a cancel."""
    return to_json({"expired": reason})


def expired_reason(data: bytes) -> str | None:
    """The reason of an ``expired`` answer, else None (other answers are JSON or ``pack``'s)."""
    if not data.startswith(b'{"expired":'):
        return None
    return str(from_json(data)["expired"])
