"""The lens over several processes (``lazarus_mcp/distributed``): parity with one process at
every block, rank memory, faults, and the host rules.

A process holds one shard group (``mx.distributed.init`` is process-wide), so each group runs
in a subprocess of its own (``tests/shard_parity.py``, ``tests/shard_fault.py``), with real
ranks over the ring backend on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazarus_mcp.distributed.hosts import local_hosts, parse_hostfile, ring_hostfile
from lazarus_mcp.distributed.split import even_split
from lazarus_mcp.errors import InvalidRequestError, UnsupportedModelError
from tests.checkpoints import FAMILY_CONFIGS, build_checkpoint
from tests.conftest import PARITY, PARITY_MODELS, ROOT

TOLERANCE = 1e-5


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _parity_run(shards: int, paths: list[Path], timeout: float = 900) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.shard_parity", str(shards), *map(str, paths)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _assert_parity(rows: list[dict], count: int, shards: int) -> None:
    assert len(rows) == count
    for row in rows:
        assert "refused" not in row, row
        assert row["sharding"]["ranks"] == shards
        for mode in ("last", "grid", "batch", "some"):
            worst, same_ids = row[mode]
            assert worst <= TOLERANCE, (row["model"], mode, worst)
            assert same_ids, (row["model"], mode)


@pytest.mark.slow
@pytest.mark.parametrize("shards", [2, 3])
def test_parity_checkpoints_sharded_equal_one_process(shards: int) -> None:
    """last, grid (every position, embedding row) and batch: every block within 1e-5."""
    paths = [PARITY / name for name in PARITY_MODELS]
    _assert_parity(_parity_run(shards, paths), len(paths), shards)


@pytest.mark.slow
def test_every_family_sharded_equals_one_process(tmp_path: Path) -> None:
    paths = [build_checkpoint(tmp_path / f, f) for f in sorted(FAMILY_CONFIGS)]
    _assert_parity(_parity_run(2, paths), len(paths), 2)


@pytest.mark.slow
def test_compare_attribute_generate_and_multi_token_sharded_equal_one_process(
    tmp_path: Path,
) -> None:
    """Over 3 ranks (the middle one may hold no displayed row): compare (two prompts, and two
    models on one group), attribute (with a foil; refused alike on GPT-NeoX's parallel blocks),
    generate (greedy past gemma3-text's 4-token window, and sampled with a seed) and multi-token
    tracked strings, within 1e-5. (Every registry family at 2 ranks: ``python -m
    tests.shard_tools 2 A B --families``, about 5 minutes here.)"""
    pair = [PARITY / "llama", PARITY / "llama-tied"]
    more = [PARITY / "gemma3-text", build_checkpoint(tmp_path / "gpt_neox", "gpt_neox")]
    done = subprocess.run(
        [sys.executable, "-m", "tests.shard_tools", "3", *map(str, [*pair, *more])],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 4, done.stdout
    modes = {"compare", "compare_some", "attribute", "attribute_foil", "generate"}
    modes |= {"generate_sampled", "multi_token", "compare_models"}
    seen = set()
    for row in rows:
        for mode, value in row.items():
            if mode in modes:
                worst, same = value
                assert worst <= TOLERANCE, (row["model"], mode, worst)
                assert same, (row["model"], mode)
                seen.add(mode)
        if "multi_token" in row:
            assert row["multi_token_scored"] and row["ranks"] == 3
    assert seen == modes


def test_split_is_contiguous_and_even() -> None:
    assert even_split(6, 2).ranges == ((0, 3), (3, 6))
    assert even_split(7, 3).ranges == ((0, 3), (3, 5), (5, 7))
    assert even_split(7, 3).owner(4) == 1
    with pytest.raises(UnsupportedModelError, match="cannot be split over 5"):
        even_split(4, 5)


def test_the_mpi_backend_is_refused_with_the_reason_before_any_rank_starts() -> None:
    from lazarus_mcp.distributed.group import current_group
    from lazarus_mcp.distributed.pipeline import hosts_for
    from lazarus_mcp.modeling.options import LoadOptions

    with pytest.raises(InvalidRequestError, match="mpirun starts every rank itself"):
        hosts_for(LoadOptions(shards=2, backend="mpi"))
    assert current_group() is None
    assert hosts_for(LoadOptions(shards=2)).backend == "ring"


def test_answers_between_ranks_carry_only_numeric_arrays_of_their_stated_size() -> None:
    import numpy as np

    from lazarus_mcp.distributed import wire

    arrays = {"p": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([3, 1])}
    packed = wire.pack(arrays, {"rows": [None, 4]})
    back, meta = wire.unpack(packed)
    assert meta == {"rows": [None, 4]} and set(back) == {"p", "ids"}
    assert np.array_equal(back["p"], arrays["p"]) and back["ids"].dtype == np.int64
    assert wire.expired_reason(packed) is None
    assert wire.expired_reason(wire.expired("late")) == "late"
    with pytest.raises(ValueError, match="runs past"):
        wire.unpack(packed[:-4])
    with pytest.raises(ValueError, match="bytes after"):
        wire.unpack(packed + b"x")
    header = wire.to_json({"meta": None, "arrays": [["o", "|O", [1]]]})
    hostile = wire.MAGIC + len(header).to_bytes(4, "little") + header + bytes(8)
    with pytest.raises(ValueError, match="dtype"):
        wire.unpack(hostile)


def test_local_ranks_listen_on_loopback_only() -> None:
    hosts = local_hosts(3)
    ring = json.loads(ring_hostfile(hosts))
    assert len(ring) == 3
    assert all(node[0].startswith("127.0.0.1:") for node in ring)
    with pytest.raises(InvalidRequestError, match="shards must be between"):
        local_hosts(1)


def test_hostfile_mixing_loopback_and_remote_is_refused() -> None:
    mixed = [{"ssh": "localhost", "ips": ["127.0.0.1"]}, {"ssh": "mac2", "ips": ["10.0.0.2"]}]
    with pytest.raises(InvalidRequestError, match="mixes loopback and remote"):
        parse_hostfile(json.dumps(mixed))
    remote = {
        "backend": "jaccl",
        "hosts": [{"ssh": "m1", "ips": ["192.168.2.1"]}, {"ssh": "m2", "ips": ["192.168.2.2"]}],
    }
    parsed = parse_hostfile(json.dumps(remote))
    assert parsed.backend == "jaccl" and not parsed.local and parsed.names() == ["m1", "m2"]
    with pytest.raises(InvalidRequestError, match="backend must be"):
        parse_hostfile(json.dumps(remote), backend="tcp")
    with pytest.raises(InvalidRequestError, match="not an IP"):
        parse_hostfile(json.dumps([{"ssh": "a", "ips": ["a.b"]}, {"ssh": "b", "ips": ["c"]}]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its parent.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return state != "Z"


def _fault(action: str, call_timeout: float) -> tuple[list[str], float, int, int]:
    """Rank 0 in a subprocess; ``action`` on rank 1 once the call is under way."""
    rank0 = subprocess.Popen(
        [sys.executable, "-m", "tests.shard_fault", str(PARITY / "llama"), str(call_timeout)],
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert rank0.stdout is not None and rank0.stdin is not None
        ready = rank0.stdout.readline().split()
        assert ready and ready[0] == "READY", rank0.stderr.read() if rank0.stderr else ""
        rank1 = int(ready[1])
        os.kill(rank1, signal.SIGSTOP)  # rank 1 hangs: the call blocks on it
        start = time.monotonic()
        rank0.stdin.write("go\n")
        rank0.stdin.flush()
        if action == "kill":
            time.sleep(1.0)
            os.kill(rank1, signal.SIGKILL)
        out, _ = rank0.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        if rank0.poll() is None:
            rank0.kill()
    return out.splitlines(), elapsed, rank1, rank0.returncode


@pytest.mark.slow
@pytest.mark.parametrize("action", ["kill", "hang"])
def test_a_lost_rank_ends_the_call_with_one_line_and_no_orphan(action: str) -> None:
    lines, elapsed, rank1, code = _fault(action, call_timeout=8.0)
    assert code == 0
    error = next(line for line in lines if line.startswith("ERROR"))
    after = next(line for line in lines if line.startswith("AFTER"))
    assert elapsed < 30
    assert float(error.split()[1]) < 30
    assert "the shard group is lost" in error
    if action == "kill":
        assert "rank 1" in error and "signal 9" in error
    else:
        assert "no answer from the ranks within" in error
    assert "the shard group is lost" in after  # and stays lost until a restart
    deadline = time.monotonic() + 5
    while _alive(rank1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(rank1)


@pytest.mark.slow
def test_a_deadline_stops_the_ranks_in_step_and_keeps_the_group(tmp_path: Path) -> None:
    """The deadline passes while the ranks work (a lens grid, then a generation), and a call is
    cancelled while they work: each ends with its one line, not a lost group, and the next calls
    equal one process."""
    model = build_checkpoint(
        tmp_path / "wide",
        "llama",
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=1024,
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.shard_deadline", str(model)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert "ran past its time limit" in out["stopped"], out
    assert "lost" not in out["stopped"], out
    for after in ("after", "after_generate"):
        worst, same = out[after]
        assert worst <= TOLERANCE and same, out
    reason, steps = out["generate"]
    assert reason == "deadline" and steps >= 1 and out["generate_prefix"], out
    assert "cancelled" in out["cancelled"] and "lost" not in out["cancelled"], out
    worst, same = out["after_cancel"]
    assert worst <= TOLERANCE and same, out


@pytest.mark.slow
def test_each_rank_holds_at_most_six_tenths_of_the_weights(tmp_path: Path) -> None:
    """Measured as resident memory: a rank's load adds at most 0.6x what the whole model's does."""
    model = build_checkpoint(
        tmp_path / "wide",
        "llama",
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=64,
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.shard_memory", str(PARITY / "llama"), str(model)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    whole = figures["whole_resident"]
    assert whole > 0.8 * figures["whole_weights"]  # the measure sees the weights
    for rank_bytes in figures["rank_resident"]:
        assert rank_bytes <= 0.6 * whole, figures
    for weights in figures["rank_weights"]:
        assert weights <= 0.6 * figures["whole_weights"], figures


def test_a_rank_checks_only_its_share_against_the_memory_budget() -> None:
    from lazarus_mcp.distributed.stage_load import share_bytes

    llama = PARITY / "llama"
    whole = share_bytes(llama, 0, 6)
    first, second = share_bytes(llama, 0, 3), share_bytes(llama, 3, 6)
    outside = share_bytes(llama, 0, 0)  # embedding, final norm, head
    assert 0 < outside < first < whole and 0 < second < whole
    assert first + second - outside == whole


def _ranks_of(parent: int) -> list[int]:
    """Pids of the shard ranks ``parent`` started."""
    found = subprocess.run(
        ["ps", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True
    ).stdout
    return [
        int(cols[0])
        for cols in (line.split(None, 2) for line in found.splitlines())
        if len(cols) == 3 and int(cols[1]) == parent and "distributed.rank" in cols[2]
    ]


@pytest.mark.slow
def test_cli_a_killed_rank_ends_the_command_with_one_line(tmp_path: Path) -> None:
    from tests.conftest import console_script

    out = tmp_path / "out.json"
    cli = subprocess.Popen(
        [
            console_script("lazarus"),
            "introspect",
            "analyze",
            "-m",
            str(PARITY / "llama"),
            "-p",
            "The capital of France is",
            "--shards",
            "2",
            "-o",
            str(out),
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        ranks: list[int] = []
        while not ranks and time.monotonic() < deadline:
            ranks = _ranks_of(cli.pid)
            time.sleep(0.1)
        assert ranks, "the command started no rank"
        start = time.monotonic()
        os.kill(ranks[0], signal.SIGKILL)
        _, err = cli.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        if cli.poll() is None:
            cli.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert cli.returncode == 2
    assert len(lines) == 1, err
    assert "the shard group is lost: rank 1" in lines[0] and "signal 9" in lines[0]
    assert elapsed < 30
    assert not out.exists()
    assert not _ranks_of(cli.pid) and not any(_alive(pid) for pid in ranks)


@pytest.mark.slow
@pytest.mark.anyio
async def test_mcp_server_stays_up_and_reports_the_group_lost() -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from tests.conftest import console_script

    params = StdioServerParameters(
        command=console_script("lazarus-mcp"), args=["--shards", "2"], env=_env()
    )
    call = {"model": str(PARITY / "llama"), "prompt": "The capital of France is"}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        first = await session.call_tool("analyze", call)
        assert not first.is_error, first.content
        model = first.structured_content["model"]
        assert model["sharding"]["ranks"] == 2
        servers = [p for p in _pids_named("lazarus-mcp") if _ranks_of(p)]
        assert len(servers) == 1
        ranks = _ranks_of(servers[0])
        os.kill(ranks[0], signal.SIGKILL)
        for _ in range(2):  # lost, and still lost
            lost = await session.call_tool("analyze", call)
            assert lost.is_error
            text = lost.content[0].text
            assert "the shard group is lost: rank 1" in text and "\n" not in text.strip()
        assert {t.name for t in (await session.list_tools()).tools} >= {"analyze"}
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in ranks)


def _pids_named(name: str) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=,args=", "-e"], capture_output=True, text=True)
    return [
        int(line.split(None, 1)[0])
        for line in found.stdout.splitlines()
        if name in line and "pytest" not in line
    ]
