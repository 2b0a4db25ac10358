"""Shared fixtures: the parity checkpoints beside the project and the anyio backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Before any test module imports mlx.core: load the optimized BLAS first, as the CLI and the
# server do (an earlier mlx.core import leaves MLX on its reference BLAS).
from lazarus_mcp.runtime.process import prepare_process

prepare_process()

ROOT = Path(__file__).resolve().parent.parent
PARITY = Path(os.environ.get("LAZARUS_PARITY_DIR") or ROOT.parent / "shared" / "parity")
PARITY_MODELS = (
    sorted(p.name for p in PARITY.iterdir() if p.is_dir() and (p / "config.json").is_file())
    if PARITY.is_dir()
    else []
)


def parity_ref(name: str) -> dict[str, Any]:
    return json.loads((PARITY / "refs" / f"{name}.json").read_text())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _uses_parity(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return module is not None and any(
        getattr(module, name, None) is not None for name in ("PARITY", "parity_ref")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ../shared/parity, only the tests that read it are skipped; in CI it must exist."""
    if PARITY_MODELS:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"parity checkpoints not found at {PARITY}")
    skip = pytest.mark.skip(reason=f"needs the parity checkpoints at {PARITY}")
    for item in items:
        if _uses_parity(item):
            item.add_marker(skip)


def console_script(name: str) -> str:
    """An installed console script of the interpreter running the tests."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    assert found, f"the {name} console script is not installed (pip install -e .)"
    return found
