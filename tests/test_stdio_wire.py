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
