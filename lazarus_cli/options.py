"""Options every ``lazarus`` command shares: loading, logging, and the limit flags.

The limits are the core's one table (``runtime/limits.py``), the same as the server's and the
API's; a person on their own machine may raise them for one command, with the flags
``lazarus-mcp`` takes too (both made from ``LIMIT_FLAGS`` by ``lazarus_mcp/server/flags.py``).
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from typing import Any

from lazarus_mcp.server.flags import LIMIT_PARAMETERS


class Dtype(str, Enum):
    auto = "auto"
    native = "native"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


class Backend(str, Enum):
    """mx.distributed backends lazarus starts ranks for (``--shards``, ``--hostfile``)."""

    ring = "ring"
    jaccl = "jaccl"
    mpi = "mpi"


def setup_logging(verbose: bool) -> None:
    from lazarus_mcp.runtime.process import prepare_entry_point

    prepare_entry_point()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


LIMIT_OPTIONS = LIMIT_PARAMETERS


def raise_limits(given: dict[str, Any]) -> None:
    """The core's limits, with what the person asked to change for this command."""
    from lazarus_mcp.runtime import limits

    limits.configure(limits.with_flags(limits.current(), given))
