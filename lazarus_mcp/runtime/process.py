"""Process setup, done once and explicitly: never as a side effect of importing a module.

- :func:`prepare_process` loads the optimized BLAS before MLX is first imported (see
  ``accel/blas.py``) and quiets transformers' advisory warnings. The first model load calls it
  (on the worker thread, before any MLX import); a script that imports ``mlx.core`` itself
  first may call it earlier.
- :func:`prepare_entry_point` is for our own programs (``lazarus``, ``lazarus-mcp``): the
  above, plus torch hidden from transformers. transformers imports PyTorch whenever it is
  installed (seconds of cold start, hundreds of MB) although we only use its tokenizers.
  Library users (the Python API) keep their process as it is.
"""

from __future__ import annotations

import os
import sys
import threading

from lazarus_mcp.accel import blas

_lock = threading.Lock()
_prepared = False


def prepare_process() -> blas.BlasStatus:
    """Idempotent and thread-safe; returns the BLAS that serves MLX's float32 CPU matmuls."""
    global _prepared
    with _lock:
        if not _prepared:
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
            # Chat templates render in a forked child (modeling/chat_template.py); the Rust
            # tokenizers would otherwise warn on every fork after their thread pool started.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            _prepared = True
        return blas.preload()


def prepare_entry_point() -> None:
    """Call first thing in a console script, before anything imports transformers or MLX."""
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail fast
    prepare_process()
