"""``lazarus-mcp``: the server's command line (stdio transport)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from contextlib import suppress

from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.runtime.process import prepare_entry_point
from lazarus_mcp.server.app import create_server, server_version

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS |= {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """'8GB', '512MiB', '1.5g' or a byte count -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8GB, 512MiB, 1073741824)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit or ""])


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lazarus-mcp",
        description="MCP server (stdio) for logit-lens introspection: tools analyze, "
        "track_tokens, model_info, loaded_models. Logs go to stderr.",
    )
    parser.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODEL",
        help="load this model when the server starts (repeatable)",
    )
    parser.add_argument(
        "--max-models", type=_positive, default=2, metavar="N", help="models kept in memory"
    )
    parser.add_argument(
        "--memory-budget",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="bytes of weights kept in memory, e.g. 16GB (one model always stays)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {server_version()}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_entry_point()
    # Before the SDK configures logging (a no-op once the root logger has a handler): stderr only.
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cache = ModelCache(max_models=args.max_models, memory_budget=args.memory_budget)
    server = create_server(cache, preload=args.preload)
    try:
        with suppress(KeyboardInterrupt):
            server.run("stdio")
    finally:
        # The protocol is over, but the MLX worker may still be finishing a load (it cannot be
        # interrupted): what it prints from now on must not land on the client's stdout pipe.
        os.dup2(2, 1)


if __name__ == "__main__":
    main()
