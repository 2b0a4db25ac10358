"""How every ``lazarus`` command ends: run the core, write files atomically, print, or fail.

One path for all commands, so each one turns a core error or an unwritable file into the same
one-line ``error: ...`` on stderr with exit status 2 (never a traceback), writes ``-o`` files
whole or not at all, and prints ``--json`` exactly as the file holds it.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _not_a_file(path: Path) -> str | None:
    """Why an existing target must not be replaced: a write renames a new file over it, which
    would turn a device node (``-o /dev/full``, as root), a FIFO or a socket into a file."""
    try:
        mode = path.expanduser().stat().st_mode  # through symlinks: what the name reaches
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(mode):
        return "it is a directory"
    if not stat.S_ISREG(mode):
        return "it exists and is not a regular file"
    return None


def check_writable(path: Path) -> None:
    """Refuse an output path before the (slow) analysis rather than after it."""
    parent = path.expanduser().resolve().parent
    if (reason := _not_a_file(path)) is not None:
        fail(f"cannot write {path}: {reason}")
    if not parent.is_dir():
        fail(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        fail(f"cannot write {path}: directory {parent} is not writable")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside the target, then rename: never a half-written file."""
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file private (0600); the result should be as readable as any file the
    # user writes (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_core(work: Callable[[], Awaitable[T]], on_error: Callable[[], None] | None = None) -> T:
    """Run an async core call to completion; a :class:`LazarusError` becomes ``fail``."""
    import anyio

    from lazarus_mcp.errors import LazarusError

    try:
        return anyio.run(work)
    except LazarusError as exc:
        if on_error is not None:
            on_error()
        fail(str(exc))


def write_files(files: Mapping[Path, bytes]) -> None:
    for path, content in files.items():
        if (reason := _not_a_file(path)) is not None:
            fail(f"cannot write {path}: {reason}")
        try:
            write_atomic(path, content)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")


def emit_text(data: bytes, text: str, written: list[Path], json_out: bool) -> None:
    """Print the JSON (as written) or the text rendering followed by the files written."""
    if json_out:
        sys.stdout.write(data.decode())
        return
    typer.echo(text)
    if written:
        typer.echo("")
    for path in written:
        typer.echo(f"Wrote {path}")


def emit(result: BaseModel, text: str, output: Path | None, json_out: bool) -> None:
    """One result: ``-o`` gets its JSON, stdout the JSON (``--json``) or the text."""
    from lazarus_mcp.schema import to_json

    data = to_json(result)
    written = [] if output is None else [output]
    write_files({path: data for path in written})
    emit_text(data + b"\n", text, written, json_out)
