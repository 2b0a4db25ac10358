"""The stdio wire at its edges (issue 15): lines read in buffered chunks, an over-long line
answered at the cap, ids that are not strings or integers, and the initialize handshake.
A real server process, spoken to line by line."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lazarus_mcp.server.transport import MAX_LINE_BYTES

INIT = {
    "jsonrpc": "2.0",
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "wire", "version": "0"},
    },
}


class Wire:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lazarus_mcp.server.main", "--log-level", "ERROR"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def send(self, data: bytes | dict[str, Any], end: bytes = b"\n") -> None:
        assert self.proc.stdin
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.proc.stdin.write(raw + end)
        self.proc.stdin.flush()

    def read(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "no reply"
        line = self.proc.stdout.readline()
        assert line, "the server closed stdout"
        message: dict[str, Any] = json.loads(line)
        return message

    def read_syscalls(self) -> int:
        """How many read syscalls the server process has made (all its threads)."""
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
        raise AssertionError("no syscr in /proc/PID/io")

    def initialize(self) -> None:
        self.send({**INIT, "id": 0})
        assert "result" in self.read()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


@pytest.fixture
def wire() -> Iterator[Wire]:
    server = Wire()
    try:
        yield server
    finally:
        server.proc.kill()
        server.proc.wait()


def _ping(wire: Wire, request_id: int) -> None:
    wire.send({"jsonrpc": "2.0", "id": request_id, "method": "ping"})
    assert wire.read() == {"jsonrpc": "2.0", "id": request_id, "result": {}}


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/PID/io")
def test_a_long_line_is_read_in_chunks_not_byte_by_byte(wire: Wire) -> None:
    _ping(wire, 1)
    before = wire.read_syscalls()
    pad = "x" * (4 * 2**20)
    wire.send({"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"pad": pad}})
    assert wire.read()["id"] == 2
    # Byte by byte this was over 4 million reads; buffered it is a few (1 MiB each).
    assert wire.read_syscalls() - before < 10_000


def test_a_line_past_the_cap_is_answered_at_the_cap(wire: Wire) -> None:
    """The error comes before the line ends; the rest is dropped and the next line served."""
    _ping(wire, 1)
    wire.send(b"x" * (MAX_LINE_BYTES + 4096), end=b"")
    reply = wire.read()
    assert reply["error"]["code"] == -32600
    assert "longer than" in reply["error"]["message"]
    wire.send(b"y" * (MAX_LINE_BYTES + 4096))  # the rest of that line, then its end
    _ping(wire, 2)


BAD_IDS = [{"a": 1}, [1], 1.5, None, True, False]


def test_a_request_with_an_id_that_is_not_a_string_or_integer_gets_32600(wire: Wire) -> None:
    """Such a request validated as a notification and got no reply at all."""
    wire.initialize()
    for bad_id in BAD_IDS:
        wire.send({"jsonrpc": "2.0", "id": bad_id, "method": "ping"})
        reply = wire.read()
        assert reply["id"] is None, bad_id
        assert reply["error"]["code"] == -32600, bad_id
        assert "id must be a string or an integer" in reply["error"]["message"]
    _ping(wire, 7)


def test_initialize_comes_first_and_once(wire: Wire) -> None:
    """A request before initialize got a misleading -32602; a second initialize was accepted."""
    wire.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    reply = wire.read()
    assert reply["id"] == 1 and reply["error"]["code"] == -32600
    assert "send initialize first" in reply["error"]["message"]
    _ping(wire, 2)  # ping is allowed any time
    # An initialize the session rejects may be retried.
    wire.send({"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {"x": 1}})
    assert "error" in wire.read()
    wire.initialize()
    wire.send({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})
    assert wire.read()["result"]["tools"]
    wire.send({**INIT, "id": 5})
    reply = wire.read()
    assert reply["id"] == 5 and reply["error"]["code"] == -32600
    assert "already initialized" in reply["error"]["message"]
    _ping(wire, 6)
