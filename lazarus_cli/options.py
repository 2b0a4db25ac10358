"""Options every ``lazarus`` command shares: loading, logging, and the limit flags.

The limits are the core's one table (``runtime/limits.py``), the same as the server's and the
API's; a person on their own machine may raise them for one command.
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import replace
from enum import Enum
from typing import Annotated, Any

import typer


class Dtype(str, Enum):
    auto = "auto"
    native = "native"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


def setup_logging(verbose: bool) -> None:
    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _limit(name: str, kind: type, help_text: str, minimum: float = 1) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, typer.Option(flag, min=minimum, help=help_text)],
    )


# (option, the Limits field it sets, factor from the option's unit to the field's)
LIMIT_FIELDS = {
    "max_prompt_tokens": ("max_prompt_tokens", 1),
    "max_prompt_chars": ("max_prompt_chars", 1),
    "call_timeout": ("call_timeout", 1),
    "max_top_k": ("max_top_k", 1),
    "max_tracked_tokens": ("max_tracked_tokens", 1),
    "max_targets": ("max_targets", 1),
    "max_result_mb": ("max_result_bytes", 2**20),
}
LIMIT_OPTIONS = [
    _limit("max_prompt_tokens", int, "Raise the prompt limit in tokens (default 4096)."),
    _limit("max_prompt_chars", int, "Raise the prompt limit in characters (default 100000)."),
    _limit("call_timeout", float, "Seconds the command may compute (default 300).", 0.1),
    _limit("max_top_k", int, "Raise the top_k limit (default 100)."),
    _limit("max_tracked_tokens", int, "Raise the tracked-token limit (default 32)."),
    _limit("max_targets", int, "Raise the attribution-target limit (default 16)."),
    _limit("max_result_mb", int, "Raise the result-size limit in MiB of JSON (default 32)."),
]


def raise_limits(given: dict[str, Any]) -> None:
    """The core's limits, with what the person asked to change for this command."""
    from lazarus_mcp.runtime import limits

    changes = {
        target: given[option] * factor
        for option, (target, factor) in LIMIT_FIELDS.items()
        if given.get(option) is not None
    }
    if changes:
        limits.configure(replace(limits.current(), **changes))
