"""Usage errors in one line, for ``lazarus`` and ``lazarus-mcp`` alike.

Typer draws a bad option value, a missing option or an unknown one as a five-line box with the
usage line; a command's own errors (``error: ...``, exit 2) are one line. Scripts and agents read
stderr, so every bad input now reads the same way: ``error: <what> (see '<command> --help')``,
exit status 2, never a traceback. Help itself (``--help``, or no arguments) is unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer 0.2x carries its own copy of click; its errors are that copy's classes.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on the click package
    from click.exceptions import (  # type: ignore[assignment]
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )


def _one_line(error: ClickException) -> NoReturn:
    if isinstance(error, NoArgsIsHelpError):
        sys.exit(error.exit_code)  # the help is printed already
    message = " ".join(error.format_message().split()).replace("Value error, ", "")
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if isinstance(error, UsageError) and ctx else ""
    typer.echo(f"error: {message}{hint}", err=True)
    sys.exit(error.exit_code)


def _main(run: Any, args: Sequence[str] | None, standalone_mode: bool, **extra: Any) -> Any:
    if not standalone_mode:
        return run(args, standalone_mode=False, **extra)
    try:
        code = run(args, standalone_mode=False, **extra)
    except ClickException as error:
        _one_line(error)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


class OneLineGroup(TyperGroup):
    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        return _main(super().main, args, standalone_mode, **extra)


class OneLineCommand(TyperCommand):
    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        return _main(super().main, args, standalone_mode, **extra)
