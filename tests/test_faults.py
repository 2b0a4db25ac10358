"""The installed ``lazarus-mcp`` as a process, under faults: malformed JSON-RPC, signals idle and
mid-call, a client that closes stdin or stops reading. Raw pipes, so nothing is hidden by a
client library; every stdout line must be one JSON-RPC message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.checkpoints import build_checkpoint
from tests.conftest import PARITY, console_script

LLAMA = str(PARITY / "llama")
SLOW_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"


class Raw:
    """A server process spoken to line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [console_script("lazarus-mcp"), "--log-level", "WARNING", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.next_id = 1

    def send_line(self, line: bytes) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        assert line, "the server closed stdout"
        message: dict[str, Any] = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        return message

    def response(self, request_id: int | None) -> dict[str, Any]:
        while True:
            message = self.read()
            if "method" not in message and message.get("id") == request_id:
                return message

    def initialize(self) -> None:
        self.send(
            {
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        assert self.response(0)["result"]["serverInfo"]["name"] == "lazarus"
        self.send({"method": "notifications/initialized"})

    def call(self, name: str, arguments: dict[str, Any], progress: bool = False) -> int:
        request_id = self.next_id
        self.next_id += 1
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if progress:
            params["_meta"] = {"progressToken": f"p{request_id}"}
        self.send({"id": request_id, "method": "tools/call", "params": params})
        return request_id

    def finish(self, timeout: float = 15) -> tuple[int, str]:
        """Exit status (within ``timeout``) and stderr."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        assert self.proc.stderr
        return code, self.proc.stderr.read().decode()


def good_answer(server: Raw) -> None:
    request_id = server.call("analyze", {"model": LLAMA, "prompt": "Hi", "raw": True})
    result = server.response(request_id)["result"]
    assert not result.get("isError"), result
    assert result["structuredContent"]["model"]["num_layers"] == 6


def test_malformed_json_rpc_gets_json_rpc_errors_and_the_server_carries_on() -> None:
    server = Raw()
    try:
        server.initialize()
        deep = b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": ' + b"[" * 100_000
        cases = [
            (b"this is not json", -32700, None),
            (
                b'{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"x": "\\ud800"}}',
                -32700,
                None,
            ),
            (b'[{"jsonrpc": "2.0", "id": 4, "method": "ping"}]', -32600, None),
            (b'{"jsonrpc": "2.0", "id": 5, "no_method": true}', -32600, 5),
            (deep + b"]" * 100_000 + b"}", -32600, None),
        ]
        for line, code, request_id in cases:
            server.send_line(line)
            reply = server.read()
            assert reply["error"]["code"] == code, (line[:60], reply)
            assert reply["id"] == request_id
        good_answer(server)
        assert server.proc.stdin
        server.proc.stdin.close()
        code, stderr = server.finish()
    finally:
        server.proc.kill()
    assert code == 0 and "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_when_idle_ends_the_server_promptly_and_quietly(signum: int) -> None:
    server = Raw()
    try:
        server.initialize()
        good_answer(server)
        server.proc.send_signal(signum)
        code, stderr = server.finish(timeout=10)
    finally:
        server.proc.kill()
    assert code == 0 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model whose chat template keeps the worker busy (until the template timeout)."""
    path = build_checkpoint(tmp_path_factory.mktemp("slow") / "slow")
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["chat_template"] = SLOW_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(path)


def start_slow_call(server: Raw, slow_model: str) -> None:
    server.initialize()
    server.call("model_info", {"model": slow_model})
    server.response(server.next_id - 1)
    server.call("analyze", {"model": slow_model, "prompt": "Hi"}, progress=True)
    assert server.read()["method"] == "notifications/progress"
    time.sleep(0.5)  # the template is rendering: the worker is busy


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_call_ends_the_server_promptly_and_quietly(
    signum: int, slow_model: str
) -> None:
    server = Raw()
    try:
        start_slow_call(server, slow_model)
        began = time.monotonic()
        server.proc.send_signal(signum)
        code, stderr = server.finish(timeout=10)
    finally:
        server.proc.kill()
    assert code == 0 and "Traceback" not in stderr
    assert time.monotonic() - began < 10


def test_closing_stdin_mid_call_ends_the_server(slow_model: str) -> None:
    server = Raw()
    try:
        start_slow_call(server, slow_model)
        assert server.proc.stdin
        server.proc.stdin.close()
        code, stderr = server.finish(timeout=10)
    finally:
        server.proc.kill()
    assert code == 0 and "Traceback" not in stderr


def test_a_client_that_stops_reading_ends_the_server_quietly() -> None:
    server = Raw()
    try:
        server.initialize()
        good_answer(server)
        assert server.proc.stdout
        server.proc.stdout.close()  # the client is gone: its end of the pipe with it
        for _ in range(3):
            server.call("loaded_models", {})
        code, stderr = server.finish(timeout=10)
    finally:
        server.proc.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_a_cancelled_call_over_stdio_frees_the_worker(slow_model: str) -> None:
    server = Raw("--call-timeout", "60")
    try:
        start_slow_call(server, slow_model)
        cancelled = server.next_id - 1
        server.send({"method": "notifications/cancelled", "params": {"requestId": cancelled}})
        began = time.monotonic()
        good_answer(server)
        # The template child was killed on cancellation, not left to its 5 s timeout.
        assert time.monotonic() - began < 4.5
        assert server.proc.stdin
        server.proc.stdin.close()
        code, stderr = server.finish()
    finally:
        server.proc.kill()
    assert code == 0 and "Traceback" not in stderr


def test_the_cli_refuses_hostile_input_in_one_line(tmp_path: Path) -> None:
    path = Path(
        build_checkpoint(tmp_path / "m", num_hidden_layers=4)
    )  # then make it lie about its blocks
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 100_000}))
    cases = [
        ["-m", str(path), "-p", "Hi"],
        ["-m", LLAMA, "-p", "x" * 131_000],
        ["-m", str(PARITY / "gemma"), "-p", "Hi", "--embedding-scale", "1e308"],
        ["-m", "a" * 5000, "-p", "Hi"],
    ]
    env = {**os.environ}
    for args in cases:
        proc = subprocess.run(
            [console_script("lazarus"), "introspect", "analyze", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 2, (args[:2], proc.stderr[-500:])
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    raised = subprocess.run(
        [
            console_script("lazarus"),
            "introspect",
            "analyze",
            "-m",
            LLAMA,
            "-p",
            "x " * 60_000,
            "--max-prompt-chars",
            "200000",
            "--raw",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert raised.returncode == 2 and "tokens, too long" in raised.stderr
