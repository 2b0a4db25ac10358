"""``lazarus-mcp`` (and ``lazarus serve``): the server's command line, in Typer like the CLI.

Every limit an untrusted caller meets is an option here (see docs/security.md). Importing this
module imports neither MLX nor the MCP SDK, so ``lazarus --help`` stays fast.

The process ends promptly and quietly: on SIGINT or SIGTERM, when the client closes stdin, and
when it stops reading (a broken pipe). It leaves through ``os._exit`` because the MLX worker may
be inside a computation that cannot be interrupted, and waiting for it is what made the server
outlive its client before.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lazarus_mcp.server.flags import LIMIT_PARAMETERS

if TYPE_CHECKING:
    from lazarus_mcp.runtime.limits import Limits

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS |= {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

TOKEN_ENV = "LAZARUS_MCP_TOKEN"
ALLOW_ENV = "LAZARUS_MCP_ALLOW_MODEL"


def parse_size(text: str) -> int:
    """'8GB', '512MiB', '1.5g' or a byte count -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", str(text).lower())
    if not match:
        raise typer.BadParameter(f"not a size: {text!r} (e.g. 8GB, 512MiB, 1073741824)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit or ""])


class Transport(str, Enum):
    stdio = "stdio"
    streamable_http = "streamable-http"


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass
class ServerOptions:
    preload: list[str] = field(default_factory=list)
    max_models: int = 2
    memory_budget: int | None = None
    # The limit flags given (runtime/limits.py LIMIT_FLAGS: option -> value); the rest default.
    limits: dict[str, Any] = field(default_factory=dict)
    max_queued_calls: int = 64
    allow_model: list[str] = field(default_factory=list)
    lens_dir: Path | None = None
    transport: Transport = Transport.stdio
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    shards: int = 1
    hostfile: str | None = None
    backend: str | None = None
    log_level: str = "INFO"


def _version(value: bool) -> None:
    if value:
        from lazarus_mcp.server.app import server_version

        typer.echo(f"lazarus-mcp {server_version()}")
        raise typer.Exit()


def serve(
    preload: Annotated[
        list[str] | None,
        typer.Option(metavar="MODEL", help="Load this model when the server starts (repeatable)."),
    ] = None,
    max_models: Annotated[int, typer.Option(min=1, metavar="N", help="Models kept in memory.")] = 2,
    memory_budget: Annotated[
        int | None,
        typer.Option(
            parser=parse_size,
            metavar="SIZE",
            help="Bytes of memory for weights and one forward pass, e.g. 16GB: loads and "
            "passes estimated beyond it are refused, models beyond it evicted (one always "
            "stays). Default: 60% of physical memory for the checks, no eviction by size.",
        ),
    ] = None,
    max_queued_calls: Annotated[
        int, typer.Option(min=1, help="Calls waiting for the model worker before 'busy'.")
    ] = 64,
    allow_model: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PATTERN",
            help="Only models whose name or real path matches this fnmatch pattern (repeatable; "
            f"also {ALLOW_ENV}, patterns separated by '{os.pathsep}'). Default: any.",
        ),
    ] = None,
    lens_dir: Annotated[
        Path | None,
        typer.Option(
            "--lens-dir",
            metavar="DIR",
            help="The directory tuned and Jacobian lenses may be read from (the 'lens' argument "
            "names one under it). Default: none, only the logit lens.",
        ),
    ] = None,
    transport: Annotated[
        Transport, typer.Option(help="stdio (one client) or streamable-http.")
    ] = Transport.stdio,
    host: Annotated[
        str, typer.Option(help="HTTP address; anything but loopback requires --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(envvar=TOKEN_ENV, help="Bearer token every HTTP request must carry."),
    ] = None,
    shards: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Split every model over N local processes (ring backend on 127.0.0.1); this "
            "process is rank 0. docs/distributed.md.",
        ),
    ] = 1,
    hostfile: Annotated[
        str | None,
        typer.Option(help="Split every model over the hosts of an mlx.launch hostfile (JSON)."),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="ring (TCP) or jaccl (RDMA over Thunderbolt 5).")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    **limit_flags: Any,
) -> None:
    """MCP server for logit-lens introspection, on stdio or streamable HTTP.

    Tools: analyze, track_tokens, attribute, compare, model_info, loaded_models.

    Logs go to stderr. Limits and the threat model: docs/security.md."""
    if backend not in (None, "ring", "jaccl", "mpi"):
        raise typer.BadParameter(f"--backend must be ring, jaccl or mpi, not {backend!r}")
    allowed = list(allow_model or [])
    allowed += [p for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p]
    options = ServerOptions(
        preload=list(preload or []),
        max_models=max_models,
        memory_budget=memory_budget,
        limits={name: value for name, value in limit_flags.items() if value is not None},
        max_queued_calls=max_queued_calls,
        allow_model=allowed,
        lens_dir=lens_dir,
        transport=transport,
        host=host,
        port=port,
        token=token,
        shards=shards,
        hostfile=hostfile,
        backend=backend,
        log_level=log_level.value,
    )
    if options.transport is Transport.streamable_http:
        from lazarus_mcp.server.transport import LOOPBACK

        if options.host not in LOOPBACK and not options.token:
            raise typer.BadParameter(
                f"binding {options.host} needs a bearer token (--token or {TOKEN_ENV})",
                param_hint="'--host'",
            )
    _PARSED.append(options)


# The limit flags (--max-prompt-tokens, --call-timeout, --max-top-k, ...) come from the core's
# one table, as the CLI's do: Typer reads them from the signature.
_explicit = [
    p
    for p in inspect.signature(serve, eval_str=True).parameters.values()
    if p.kind is not inspect.Parameter.VAR_KEYWORD
]
serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [*_explicit, *LIMIT_PARAMETERS]
)

_PARSED: list[ServerOptions] = []


@functools.wraps(serve)
def serve_and_run(*args: Any, **kwargs: Any) -> None:
    """``lazarus serve``: the same options as ``lazarus-mcp``, then the server."""
    _PARSED.clear()
    serve(*args, **kwargs)
    run_server(_PARSED.pop())


def command() -> Any:
    """``serve`` as a Click command (for parsing without running)."""
    return typer.main.get_command(_app())


def _app() -> typer.Typer:
    from lazarus_mcp.server.usage import OneLineCommand

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(cls=OneLineCommand)(serve)
    return app


def parse_args(argv: Sequence[str] | None) -> ServerOptions:
    """The options ``argv`` gives (exits 2 with a message on bad ones, as the command does)."""
    _PARSED.clear()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command().main(args, prog_name="lazarus-mcp")
    except SystemExit as done:
        if done.code in (0, None) and _PARSED:
            return _PARSED.pop()
        raise
    raise SystemExit(0)


def _quit(signum: int, frame: Any) -> None:
    # Asked to stop: now, without a traceback, whatever the worker is doing.
    os._exit(0)


def server_limits(options: ServerOptions) -> Limits:
    """The core's :class:`Limits` this server's options set."""
    from lazarus_mcp.runtime import limits

    base = limits.Limits()
    base = replace(
        base,
        memory_budget=options.memory_budget or base.memory_budget,
        max_queued_calls=options.max_queued_calls,
        allowed_models=tuple(options.allow_model),
    )
    return limits.with_flags(base, options.limits)


def run_server(options: ServerOptions) -> None:
    from lazarus_mcp.runtime import limits
    from lazarus_mcp.runtime.cache import ModelCache
    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    _fixed_mmap_threshold()
    # Before the SDK configures logging (a no-op once the root logger has a handler): stderr only.
    logging.basicConfig(
        level=options.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    limits.configure(server_limits(options))
    from lazarus_mcp.lenses.seam import configure as configure_lenses
    from lazarus_mcp.modeling.options import LoadOptions
    from lazarus_mcp.server.app import create_server
    from lazarus_mcp.server.transport import serve_http, serve_stdio

    # An agent names lenses only under --lens-dir (none without it).
    configure_lenses(options.lens_dir, required=True)

    loading = LoadOptions(shards=options.shards, hostfile=options.hostfile, backend=options.backend)
    cache = ModelCache(
        max_models=options.max_models,
        memory_budget=options.memory_budget,
        default_options=loading,
    )
    server = create_server(cache, preload=options.preload)
    if options.transport is Transport.stdio:
        signal.signal(signal.SIGINT, _quit)
        signal.signal(signal.SIGTERM, _quit)
    import anyio

    try:
        if options.transport is Transport.stdio:
            anyio.run(serve_stdio, server)
        else:
            anyio.run(serve_http, server, options.host, options.port, options.token)
    except BaseException as exc:
        if not _quiet(exc):
            logging.getLogger(__name__).exception("the server stopped on an error")
            _exit(1)
    _exit(0)


def _fixed_mmap_threshold() -> None:
    """Large request buffers (an agent's 3 MB call) straight from mmap, returned when freed.

    glibc raises its mmap threshold after each large free, so later multi-MB buffers came from
    the heap and stayed there: the soak's bad inputs grew the server ~35 MiB per 600 calls over
    the wire (in memory, without the JSON buffers, it levels off). Fixed at 256 KiB, they go.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD


def _quiet(exc: BaseException) -> bool:
    from lazarus_mcp.server.transport import ClientGone

    group = getattr(exc, "exceptions", None)
    if isinstance(group, (list, tuple)):
        return all(_quiet(e) for e in group)
    return isinstance(exc, (ClientGone, KeyboardInterrupt, SystemExit, BrokenPipeError))


def _exit(code: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    run_server(parse_args(argv))


if __name__ == "__main__":
    main()
