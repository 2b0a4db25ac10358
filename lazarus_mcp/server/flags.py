"""The limit flags as Typer options, made from the core's one table (``runtime/limits.py``,
:data:`LIMIT_FLAGS`) for both command lines: ``lazarus-mcp`` and every ``lazarus`` command.

Here rather than in the CLI because the server may not import the CLI (the layers contract), and
rather than in the table's module because the core imports no Typer. Each option defaults to
``None``: the table's default stands unless the flag is given.
"""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from lazarus_mcp.runtime.limits import LIMIT_FLAGS, LimitFlag


def limit_parameter(flag: LimitFlag) -> inspect.Parameter:
    return inspect.Parameter(
        flag.option,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            flag.kind | None, typer.Option(flag.flag, min=flag.minimum, help=flag.help)
        ],
    )


LIMIT_PARAMETERS = [limit_parameter(flag) for flag in LIMIT_FLAGS]
