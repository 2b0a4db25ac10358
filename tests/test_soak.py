"""A short soak (CI): ``examples/soak.py`` with 60 mixed calls over stdio and HTTP.

The full soak (1,200 calls; figures in docs/security.md) is ``python examples/soak.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT


def soak_reports(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The soak's reports, once its exit status says it finished: a soak that crashed has no
    JSON, and its stderr (not a JSONDecodeError on empty stdout) is what says why."""
    try:
        reports: list[dict[str, Any]] | None = json.loads(proc.stdout)
    except ValueError:
        reports = None
    assert proc.returncode == 0, (reports or proc.stdout[-2000:], proc.stderr[-2000:])
    assert reports is not None, f"the soak exited 0 without its JSON: {proc.stdout[-2000:]!r}"
    return reports


def test_a_crashed_soak_reports_its_exit_status_and_stderr() -> None:
    crashed = subprocess.CompletedProcess(["soak"], 1, stdout="", stderr="Traceback: boom")
    with pytest.raises(AssertionError) as caught:
        soak_reports(crashed)
    assert "boom" in str(caught.value)
    failed = subprocess.CompletedProcess(["soak"], 1, stdout='[{"lost": 3}]', stderr="")
    with pytest.raises(AssertionError, match="'lost': 3"):
        soak_reports(failed)


def test_a_short_soak_loses_nothing_and_does_not_grow() -> None:
    args = ["--calls", "60", "--seed", "3", "--max-growth-mib", "48", "--json"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "soak.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = soak_reports(proc)
    assert {r["transport"] for r in reports} == {"stdio", "http"}
    for report in reports:
        assert report["calls"] >= 30 and report["good"] > 0 and report["bad_inputs"] > 0
        assert report["lost"] == 0 and report["mismatched"] == 0, report["problems"]
    assert "Traceback" not in proc.stderr
