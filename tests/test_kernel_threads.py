"""The kernels' helper threads (``csrc/_threads.c``) when the pool grows.

A helper started for a call must take that call's work, never the previous call's: a new helper
that did ran no job of its own and reported done twice, so the caller returned before every job
had run (output rows left uninitialized) or ``pending`` went below zero and the next caller
waited forever. The race is a few instructions wide, so the test builds the pool from its
source with a stall injected after a helper takes its work (``LZ_TEST_STALL``) and runs it in a
small C driver: many calls, the thread count growing, every job counted.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

_CSRC = Path(__file__).resolve().parents[1] / "lazarus_mcp" / "accel" / "csrc"
_COMPILER = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(_COMPILER is None, reason="no C compiler")

_DRIVER = r"""
#include "_gemm.h"
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { int *runs; } job_t;

static void *count(void *arg) {
    __atomic_add_fetch(((job_t *)arg)->runs, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* Calls that grow the pool by one and by jumps, with calls of fewer threads between; returns
 * how many jobs did not run exactly once. */
static int calls(void) {
    static const int plan[] = {2, 2, 3, 2, 5, 4, 9, 3, 17, 8, 33, 2, 48, 64, 5, 64};
    int wrong = 0;
    for (size_t c = 0; c < sizeof(plan) / sizeof(plan[0]); c++) {
        int threads = plan[c], runs[64] = {0};
        job_t jobs[64];
        for (int t = 0; t < threads; t++) jobs[t].runs = &runs[t];
        run_threads(count, jobs, sizeof(job_t), threads);
        for (int t = 0; t < threads; t++) wrong += runs[t] != 1;
    }
    return wrong;
}

int main(void) {
    int failed = calls() > 0;
    for (int round = 0; round < 20; round++) {
        /* A forked child starts with no helpers: each round grows a fresh pool. */
        pid_t pid = fork();
        if (pid == 0) _exit(calls() > 0);
        int status;
        waitpid(pid, &status, 0);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    printf("%d of 21 pools ran a job other than exactly once\n", failed);
    return failed > 0;
}
"""


def test_growing_pool_runs_every_job_exactly_once(tmp_path: Path) -> None:
    driver = tmp_path / "driver.c"
    driver.write_text(_DRIVER)
    exe = tmp_path / "driver"
    build = subprocess.run(
        [
            str(_COMPILER), "-O2", "-std=gnu11", "-pthread",
            f"-I{sysconfig.get_paths()['include']}", f"-I{_CSRC}",
            "-D_GNU_SOURCE", "-include", "unistd.h", "-DLZ_TEST_STALL()=usleep(200)",
            str(driver), str(_CSRC / "_threads.c"), "-o", str(exe),
        ],
        capture_output=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr.decode()
    try:
        proc = subprocess.run([str(exe)], timeout=60, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the thread pool hung while growing", pytrace=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


_EMPTY_SCRIPT = """
import numpy as np
from lazarus_mcp.accel import cpu_gemm
lib = cpu_gemm._lib()
sentinel = np.full(64, 7, np.uint16)
w = np.ones((1, 64), np.uint16)
lib.lz_pack(w.ctypes.data, 0, 64, sentinel.ctypes.data, 2)
y = np.full(8, 7, np.float32)
x = np.ones((1, 64), np.float32)
assert lib.lz_gemm(x.ctypes.data, 1, 64, sentinel.ctypes.data, 0, None, y.ctypes.data, 2, 2) == 0
assert (sentinel == 7).all() and (y == 7).all()
"""


def test_empty_weights_run_no_job() -> None:
    """n = 0 has no panels: packing and multiplying must do nothing (they ran a job whose
    description was never written)."""
    from lazarus_mcp.accel import cpu_gemm

    if not cpu_gemm.status().available:
        pytest.skip(f"CPU kernels unavailable: {cpu_gemm.status().reason}")
    proc = subprocess.run([sys.executable, "-c", _EMPTY_SCRIPT], timeout=60, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
