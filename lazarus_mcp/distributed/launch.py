"""Start ranks 1..N-1 the way ``mlx.launch`` starts them, and stop every one of them.

Each rank is ``python -m lazarus_mcp.distributed.rank`` with ``MLX_RANK`` and the backend's
files (``MLX_HOSTFILE`` for ring, ``MLX_IBV_DEVICES`` and ``MLX_JACCL_COORDINATOR`` for jaccl),
as ``mlx.launch`` exports them; a remote rank is the same command through ``ssh``. Rank 0 is
the calling process itself. Every child gets its own process group (``killpg`` stops it and
anything it started), a stdin pipe whose end-of-file tells it rank 0 is gone, and a stderr file
whose last line says why it failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from lazarus_mcp.distributed.hosts import Hosts, ring_hostfile

RANK_MODULE = "lazarus_mcp.distributed.rank"
JACCL_PORT = 32323


@dataclass
class RankProcess:
    rank: int
    host: str
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def exit_code(self) -> int | None:
        return self.process.poll()

    def last_words(self) -> str:
        """The last non-empty line the rank wrote to stderr (its one-line failure)."""
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        useful = [ln for ln in lines if ln.strip() and not ln.startswith("[ring] Socket")]
        return useful[-1][:300] if useful else ""


def _backend_env(hosts: Hosts, workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(variables, files) every rank exports: files are written, their path exported."""
    if hosts.backend == "ring":
        return {}, {"MLX_HOSTFILE": ring_hostfile(hosts)}
    if hosts.backend == "jaccl":
        coordinator = f"{hosts.hosts[0].ips[0]}:{JACCL_PORT}"
        devices = json.dumps([list(h.rdma) for h in hosts.hosts])
        return {"MLX_JACCL_COORDINATOR": coordinator}, {"MLX_IBV_DEVICES": devices}
    raise ValueError(f"ranks cannot be started here for the {hosts.backend} backend")


@dataclass
class Launch:
    """The started ranks 1..N-1 and what rank 0 exports to join them."""

    hosts: Hosts
    ranks: list[RankProcess] = field(default_factory=list)
    rank0_env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None

    def alive(self) -> bool:
        return all(r.exit_code() is None for r in self.ranks)

    def announce(self) -> None:
        """Wake every rank for the next request (they wait on stdin, not in the backend)."""
        for r in self.ranks:
            if r.process.stdin is not None:
                try:
                    r.process.stdin.write(b"r\n")
                    r.process.stdin.flush()
                except OSError:
                    pass  # a rank that is gone: the watchdog reports it

    def cancel(self) -> None:
        """Tell every rank that the request in progress is cancelled (``rank.py``)."""
        for r in self.ranks:
            if r.process.stdin is not None:
                try:
                    r.process.stdin.write(b"c\n")
                    r.process.stdin.flush()
                except OSError:
                    pass

    def wait_joining(self, timeout: float) -> RankProcess | str | None:
        """Until every rank has said it is joining the group: None, or the first rank that
        exited (a :class:`RankProcess`), or why the wait ended ("timeout")."""
        waiting = {r.process.stdout.fileno(): r for r in self.ranks if r.process.stdout}
        end = time.monotonic() + timeout
        while waiting:
            dead = self.first_dead()
            if dead is not None:
                return dead
            left = end - time.monotonic()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select(list(waiting), [], [], min(left, 0.2))
            for fd in ready:
                line = os.read(fd, 64)
                if b"joining" in line:
                    del waiting[fd]
        return None

    def first_dead(self) -> RankProcess | None:
        return next((r for r in self.ranks if r.exit_code() is not None), None)

    def stop(self, grace: float = 2.0) -> None:
        """Every rank's process group: SIGTERM, then SIGKILL after ``grace`` seconds; reaped."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for r in self.ranks:
                if r.exit_code() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(r.process.pid, sig)
            end = time.monotonic() + grace
            while time.monotonic() < end and not all(r.exit_code() is not None for r in self.ranks):
                time.sleep(0.05)
        for r in self.ranks:
            if r.process.stdin is not None:
                with contextlib.suppress(OSError):  # a dead rank's pipe
                    r.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.process.wait(timeout=grace)


def _command(python: str) -> list[str]:
    return [python, "-m", RANK_MODULE]


def _remote_script(rank: int, env: dict[str, str], files: dict[str, str], python: str) -> str:
    script = f"cd {shlex.quote(os.getcwd())} 2>/dev/null; "
    for key, value in env.items():
        script += f"export {key}={shlex.quote(value)}; "
    for key, content in files.items():
        script += f"f=$(mktemp); printf %s {shlex.quote(content)} > $f; export {key}=$f; "
    script += f"export MLX_RANK={rank}; exec {shlex.join(_command(python))}"
    return script


def start(hosts: Hosts, python: str | None = None) -> Launch:
    """Start ranks 1..N-1; rank 0's exports are in ``Launch.rank0_env``."""
    workdir = Path(tempfile.mkdtemp(prefix="lazarus-shards-"))
    env, files = _backend_env(hosts, workdir)
    paths = {}
    for key, content in files.items():
        path = workdir / key.lower()
        path.write_text(content)
        paths[key] = str(path)
    launch = Launch(hosts, rank0_env={**env, **paths, "MLX_RANK": "0"}, workdir=workdir)
    interpreter = python or sys.executable
    try:
        for rank in range(1, hosts.size):
            host = hosts.hosts[rank]
            err_path = workdir / f"rank{rank}.stderr"
            stderr: IO[bytes] = err_path.open("wb")
            if host.local:
                child_env = {**os.environ, **env, **paths, "MLX_RANK": str(rank)}
                cmd = _command(interpreter)
            else:
                child_env = dict(os.environ)
                script = _remote_script(rank, env, files, interpreter)
                cmd = ["ssh", "-tt", "-o", "LogLevel=QUIET", host.ssh, script]
            process = subprocess.Popen(
                cmd,
                env=child_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # one line, "joining", then nothing (rank.py)
                stderr=stderr,
                start_new_session=True,
            )
            stderr.close()
            launch.ranks.append(RankProcess(rank, host.ssh, process, err_path))
    except BaseException:
        launch.stop()
        raise
    return launch
