"""A short soak (CI): ``examples/soak.py`` with 60 mixed calls over stdio and HTTP.

The full soak (1,200 calls; figures in docs/security.md) is ``python examples/soak.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_a_short_soak_loses_nothing_and_does_not_grow() -> None:
    args = ["--calls", "60", "--seed", "3", "--max-growth-mib", "48", "--json"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "soak.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = json.loads(proc.stdout)
    assert proc.returncode == 0, (reports, proc.stderr[-2000:])
    assert {r["transport"] for r in reports} == {"stdio", "http"}
    for report in reports:
        assert report["calls"] >= 30 and report["good"] > 0 and report["bad_inputs"] > 0
        assert report["lost"] == 0 and report["mismatched"] == 0, report["problems"]
    assert "Traceback" not in proc.stderr
