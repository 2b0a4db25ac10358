"""Without the parity checkpoints, only the tests that read them are skipped, one by one: a
module that imports ``PARITY`` keeps its other tests (before, all of test_house.py skipped,
its import-side-effect check included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_only_the_tests_that_read_the_checkpoints_are_skipped(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["LAZARUS_PARITY_DIR"] = str(tmp_path / "absent")
    needs_none = "tests/test_house.py::test_one_version_from_the_metadata"
    # Reads PARITY / "llama" in its body, and LLAMA (a path in it) through a parameter.
    reads_body = "tests/test_house.py::test_a_hub_id_and_its_snapshot_share_one_load"
    reads_param = "tests/test_cli.py::test_bad_input_is_one_line_and_exit_2"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         needs_none, reads_body, reads_param],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= 2, summary  # the metadata check and test_cli's cases without a model
    assert "test_house.py:" in proc.stdout and "needs the parity checkpoints" in proc.stdout
    assert re.search(r"SKIPPED \[1\] tests/test_house\.py", proc.stdout), proc.stdout
