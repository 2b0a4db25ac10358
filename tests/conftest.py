"""Shared fixtures: the parity checkpoints beside the project and the anyio backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import CodeType, FunctionType
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


_PARITY_NAMES = frozenset({"PARITY", "PARITY_MODELS", "parity_ref"})


def _mentions_parity(value: Any, depth: int = 0) -> bool:
    """A path under the parity directory, or a container holding one (``GOOD = {"model": ...}``)."""
    if isinstance(value, (str, Path)):
        return str(value).startswith(str(PARITY))
    if depth >= 3:
        return False
    if isinstance(value, dict):
        return any(_mentions_parity(v, depth + 1) for v in (*value.keys(), *value.values()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_mentions_parity(v, depth + 1) for v in value)
    return False


def _code_uses_parity(code: CodeType, namespace: dict[str, Any], seen: set[int]) -> bool:
    """Whether code names the parity directory, a global that holds a path in it, or a test
    helper function that does (followed through the helpers it calls)."""
    for name in code.co_names:
        if name in _PARITY_NAMES:
            return True
        value = namespace.get(name)
        if value is None:
            continue
        if _mentions_parity(value):
            return True
        helper = isinstance(value, FunctionType) and value.__module__.startswith("tests.")
        if helper and id(value) not in seen:
            seen.add(id(value))
            if _code_uses_parity(value.__code__, value.__globals__, seen):
                return True
    return any(
        isinstance(const, CodeType) and _code_uses_parity(const, namespace, seen)
        for const in code.co_consts
    )


def _function_uses_parity(function: Any, seen: set[int]) -> bool:
    function = getattr(function, "__func__", function)
    code = getattr(function, "__code__", None)
    if code is None or id(function) in seen:
        return False
    seen.add(id(function))
    return _code_uses_parity(code, function.__globals__, seen)


def _uses_parity(item: pytest.Item) -> bool:
    """Whether this one test reads the parity checkpoints: its body, the helpers it calls, its
    fixtures and its parameters. Per test, not per module: a module that imports ``PARITY`` may
    hold tests that need no checkpoint (test_house.py's import-side-effect check)."""
    seen: set[int] = set()
    if _function_uses_parity(getattr(item, "function", None), seen):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and _mentions_parity(list(callspec.params.values())):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info is not None else ():
        if any(_function_uses_parity(d.func, seen) for d in defs):
            return True
    return False


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
