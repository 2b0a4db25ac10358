"""``lazarus-mcp --transport streamable-http`` on loopback: the SDK's client, several clients
sharing one cache, DNS-rebinding protection, the bearer token (401 without it), and the refusal
to bind a network address without a token. Loopback only."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import PARITY, console_script

pytestmark = pytest.mark.anyio

LLAMA = str(PARITY / "llama")
GOOD = {"model": LLAMA, "prompt": "The capital of France is", "raw": True}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [console_script("lazarus-mcp"), "--transport", "streamable-http", "--port", str(port),
         "--log-level", "WARNING", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        finally:
            proc.kill()
    assert proc.stderr
    assert "Traceback" not in proc.stderr.read().decode()


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return dict(result.structured_content)


async def test_clients_over_http_share_one_cache() -> None:
    with http_server() as url:
        async with Client(url) as first, Client(url) as second:
            results: list[dict[str, Any]] = []

            async def call(client: Client) -> None:
                results.append(ok(await client.call_tool("analyze", GOOD)))

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for client in (first, second, first, second):
                        tg.start_soon(call, client)
                held = ok(await second.call_tool("loaded_models", {}))
                bad = await first.call_tool("analyze", {**GOOD, "prompt": "x" * 200_000})
    assert all(r == results[0] for r in results)
    assert len(held["models"]) == 1
    assert bad.is_error and "max_prompt_chars" in bad.content[0].text


async def test_dns_rebinding_is_refused_on_loopback() -> None:
    with http_server() as url:
        async with httpx2.AsyncClient() as http:
            good = await http.post(url, json=INIT, headers=ACCEPT)
            rebound = await http.post(url, json=INIT, headers={**ACCEPT, "host": "evil.example"})
            origin = await http.post(
                url, json=INIT, headers={**ACCEPT, "origin": "http://evil.example"}
            )
    assert good.status_code == 200
    assert rebound.status_code in (400, 403, 421)
    assert origin.status_code in (400, 403)


async def test_a_token_is_required_on_every_request() -> None:
    with http_server("--token", "s3cret") as url:
        async with httpx2.AsyncClient() as http:
            none = await http.post(url, json=INIT, headers=ACCEPT)
            wrong = await http.post(
                url, json=INIT, headers={**ACCEPT, "authorization": "Bearer nope"}
            )
        assert none.status_code == 401 and wrong.status_code == 401
        headers = {"authorization": "Bearer s3cret"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            with anyio.fail_after(120):
                ok(await client.call_tool("analyze", GOOD))


def test_binding_a_network_address_needs_a_token() -> None:
    proc = subprocess.run(
        [console_script("lazarus-mcp"), "--transport", "streamable-http", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "needs a bearer token" in proc.stderr
