"""Process-wide settings for our own entry points (the ``lazarus`` CLI and the MCP server)."""

from __future__ import annotations

import os
import sys


def prepare_entry_point() -> None:
    """Call before anything imports transformers.

    transformers imports PyTorch whenever it is installed (seconds of cold start, hundreds of MB)
    although we only use its tokenizers; our own processes never need torch, so it is hidden
    from them. Library users (the Python API) keep their process as it is.
    """
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
