"""The server's two transports: stdio (one client, the default) and streamable HTTP.

stdio is ours rather than the SDK's ``stdio_server`` for three reasons measured on it: a
malformed line (not JSON, a lone ``\\ud800`` escape, a batch array) was dropped without a
reply, so the client waited for its own timeout; a line had no length bound; and a client that
stopped reading turned every later write into a ``BrokenPipeError`` traceback. Here a bad line
gets a JSON-RPC error (parse error, or invalid request with the request's id when it has one),
lines are capped, and a gone client ends the server quietly.

HTTP is the SDK's streamable-HTTP app (with its DNS-rebinding protection on loopback) behind a
bearer-token check: binding anything but loopback requires a token, and every request must carry
it (401 otherwise). See docs/security.md.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 2**20
# Unbuffered, readline() made one read syscall per byte: a 17 MiB line took 53 s to reject,
# 200 MB took 222 s. Buffered, a line is read in chunks of this size.
READ_BUFFER = 2**20
MAX_JSON_DEPTH = 64
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ClientGone(Exception):
    """The client closed its end (stdin at EOF, or stdout a broken pipe)."""


def _depth(text: str) -> int:
    from lazarus_mcp.modeling.safe_files import nesting_depth

    return nesting_depth(text)


def parse_line(line: bytes) -> SessionMessage | JSONRPCError | None:
    """One line of the wire: a message, the JSON-RPC error that answers it, or None (blank)."""
    if not line.strip():
        return None
    if len(line) > MAX_LINE_BYTES:
        return _error(None, INVALID_REQUEST, f"message longer than {MAX_LINE_BYTES} bytes")
    try:
        text = line.decode("utf-8")
        if _depth(text) > MAX_JSON_DEPTH:
            return _error(None, INVALID_REQUEST, f"message nested deeper than {MAX_JSON_DEPTH}")
        data = json.loads(text)
        # A lone surrogate escape parses into a str that is not valid Unicode text.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return _error(None, PARSE_ERROR, "parse error: the line is not valid JSON text")
    request_id = data.get("id") if isinstance(data, dict) else None
    if not _valid_id(request_id):
        # An object, array, float, null or bool id would validate as a notification, which
        # gets no reply: the client would wait for its own timeout.
        if isinstance(data, dict) and "method" in data and "id" in data:
            return _error(
                None, INVALID_REQUEST, "invalid request: id must be a string or an integer"
            )
        request_id = None
    if isinstance(data, list):
        return _error(None, INVALID_REQUEST, "invalid request: batches are not supported")
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_python(data, by_name=False))
    except Exception:
        return _error(request_id, INVALID_REQUEST, "invalid request: not a JSON-RPC 2.0 message")


def _valid_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


class Handshake:
    """The session's order, which the SDK does not enforce over stdio: ``initialize`` first and
    once (``ping`` any time). Before, a request ahead of ``initialize`` got a misleading -32602
    ("Invalid request parameters") and a second ``initialize`` was answered as the first."""

    ANYTIME = ("ping",)

    def __init__(self) -> None:
        self.pending: str | int | None = None  # the id of the initialize being answered
        self.done = False

    def refuse(self, message: SessionMessage) -> JSONRPCError | None:
        """The error answering a request out of order, or None to pass it to the session."""
        request = message.message
        if not isinstance(request, JSONRPCRequest) or request.method in self.ANYTIME:
            return None
        if request.method == "initialize":
            if self.done or self.pending is not None:
                return _error(
                    request.id,
                    INVALID_REQUEST,
                    "invalid request: the session is already initialized",
                )
            self.pending = request.id
            return None
        if not self.done and self.pending is None:
            return _error(
                request.id,
                INVALID_REQUEST,
                f"invalid request: {request.method[:80]} before initialize; send initialize first",
            )
        return None

    def answered(self, message: Any) -> None:
        """Note the session's reply to ``initialize``: success ends the handshake, an error lets
        the client try again."""
        if self.pending is None or getattr(message, "id", None) != self.pending:
            return
        self.done = isinstance(message, JSONRPCResponse)
        self.pending = None


def _error(request_id: str | int | None, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))


def _claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Private duplicates of stdin and stdout for the protocol; fd 0 then reads /dev/null and
    fd 1 writes to stderr, so nothing else in the process can read or corrupt the wire."""
    wire_in = os.fdopen(os.dup(0), "rb", buffering=READ_BUFFER)
    wire_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return wire_in, wire_out


def _write_all(out: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written or 0 :]


@asynccontextmanager
async def stdio_transport(
    wire_in: BinaryIO | None = None, wire_out: BinaryIO | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """(read stream, write stream) over stdio, for ``Server.run``; ends when the client goes."""
    if wire_in is None or wire_out is None:
        wire_in, wire_out = _claim_stdio()
    reader_in, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, writer_out = anyio.create_memory_object_stream[SessionMessage](0)
    replies_in, replies = anyio.create_memory_object_stream[JSONRPCError](16)
    source = _buffered(wire_in)
    sink = wire_out
    handshake = Handshake()

    async def read_lines() -> None:
        async with reader_in, replies_in:
            while True:
                line = await anyio.to_thread.run_sync(
                    source.readline, MAX_LINE_BYTES + 1, abandon_on_cancel=True
                )
                if not line:
                    return  # EOF: the client is gone
                parsed = parse_line(line)
                if isinstance(parsed, SessionMessage):
                    parsed = handshake.refuse(parsed) or parsed
                if isinstance(parsed, JSONRPCError):
                    logger.warning("answered a malformed message: %s", parsed.error.message)
                    await replies_in.send(parsed)
                elif parsed is not None:
                    await reader_in.send(parsed)
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    # Answered at the cap; the rest of the line is read and dropped after.
                    await anyio.to_thread.run_sync(_skip_line, source, abandon_on_cancel=True)

    async def write(message: Any) -> None:
        data = message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        try:
            await anyio.to_thread.run_sync(_write_all, sink, data, abandon_on_cancel=True)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:
            raise ClientGone from exc

    async def write_messages() -> None:
        async with writer_out:
            async for session_message in writer_out:
                handshake.answered(session_message.message)
                await write(session_message.message)

    async def write_replies() -> None:
        async with replies:
            async for error in replies:
                await write(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_lines)
        tg.start_soon(write_messages)
        tg.start_soon(write_replies)
        yield read_stream, write_stream
        tg.cancel_scope.cancel()


def _buffered(wire: BinaryIO) -> BinaryIO:
    """A buffered reader over ``wire`` (whose readline would otherwise read byte by byte)."""
    if isinstance(wire, io.RawIOBase):
        return io.BufferedReader(wire, READ_BUFFER)
    return wire


def _skip_line(source: BinaryIO) -> None:
    while True:
        chunk = source.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one client over stdio until it closes stdin or stops reading."""
    async with stdio_transport() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


# HTTP ---------------------------------------------------------------------------------------


class BearerToken:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            body = b'{"error": "unauthorized: send Authorization: Bearer <token>"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)

    def _authorized(self, scope: Any) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given, self._token)
        return False


def http_app(server: Server[Any], host: str, port: int, token: str | None) -> Any:
    """The streamable-HTTP ASGI app: DNS-rebinding protection on loopback (the SDK's), a bearer
    token wherever one is given (required off loopback)."""
    if host not in LOOPBACK and not token:
        raise ValueError(
            f"binding {host} exposes the server to the network: give a bearer token "
            "(--token or LAZARUS_MCP_TOKEN), or bind 127.0.0.1"
        )
    security = None
    if host in LOOPBACK:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"],
            allowed_origins=[
                f"http://127.0.0.1:{port}",
                f"http://localhost:{port}",
                f"http://[::1]:{port}",
            ],
        )
    app = server.streamable_http_app(host=host, transport_security=security)
    return BearerToken(app, token) if token else app


async def serve_http(server: Server[Any], host: str, port: int, token: str | None) -> None:
    import uvicorn

    app = http_app(server, host, port, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
