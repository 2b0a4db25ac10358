"""Pictures are a core feature: matplotlib is a dependency, and where it is missing anyway a PNG
or SVG plot is a one-line error (CLI exit 2, MCP error result), never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs the CLI as if matplotlib were not installed (a None entry makes every import of it fail).
WITHOUT_MATPLOTLIB = """
import sys
for name in ("matplotlib", "matplotlib.figure", "matplotlib.colors", "matplotlib.ticker"):
    sys.modules[name] = None
from lazarus_cli.main import run
sys.argv = ["lazarus", *sys.argv[1:]]
run()
"""


def test_matplotlib_is_a_dependency_not_an_extra() -> None:
    """The README installs with ``pip install -e .``, then draws a PNG heatmap."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("matplotlib") for dep in project["dependencies"])


@pytest.mark.parametrize(("option", "suffix"), [("--plot", ".png"), ("--plot-tracks", ".svg")])
def test_a_missing_matplotlib_is_a_one_line_error(tmp_path: Path, option: str, suffix: str) -> None:
    target = tmp_path / f"picture{suffix}"
    args = ["introspect", "analyze", "-m", "demo", "-p", "The capital of France is", "-t", " Paris"]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB, *args, option, str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "need matplotlib" in lines[0] and "pip install matplotlib" in lines[0]
    assert not target.exists()
