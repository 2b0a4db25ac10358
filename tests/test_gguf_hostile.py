"""Hostile GGUF files: each ends in one line, within 5 s and without allocating what it claims,
through the loader, the MCP server (which answers a good call right after) and the CLI.

The files are written byte by byte here (``gguf_bytes``), so every field can lie.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from mcp import Client

from lazarus_mcp.errors import LazarusError
from lazarus_mcp.modeling.loading import LoadOptions, load
from lazarus_mcp.runtime import limits, worker
from lazarus_mcp.runtime.cache import ModelCache
from lazarus_mcp.server.app import create_server
from tests.conftest import PARITY, console_script
from tests.gguf_files import write_gguf
from tests.test_hostile import error_line

U32, I32, F32, STRING, ARRAY, U64 = 4, 5, 6, 8, 9, 10


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(
    kv: list[tuple[str, int, bytes]],
    tensors: list[tuple[str, list[int], int, int]],
    data: bytes = b"",
    n_tensors: int | None = None,
    n_kv: int | None = None,
) -> bytes:
    """A GGUF v3 file: metadata (key, value type, encoded value), tensor infos (name, dims
    fastest first, ggml type, offset) and the data section, with counts that may lie."""
    out = b"GGUF" + struct.pack("<I", 3)
    out += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors,
                       len(kv) if n_kv is None else n_kv)  # fmt: skip
    for key, value_type, value in kv:
        out += _string(key) + struct.pack("<I", value_type) + value
    for name, dims, type_id, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", type_id, offset)
    out += b"\0" * (-len(out) % 32)
    return out + data


ARCH = ("general.architecture", STRING, _string("llama"))
F32_VECTOR = ("blk.0.attn_norm.weight", [64], 0, 0)


def _valid_base(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "base", "llama", "Q8_0")


def _truncated_in_data(tmp_path: Path) -> bytes:
    data = _valid_base(tmp_path).read_bytes()
    return data[: len(data) * 2 // 3]


def _truncated_in_header(tmp_path: Path) -> bytes:
    return _valid_base(tmp_path).read_bytes()[:300]


def _one_more_tensor_than_listed(tmp_path: Path) -> bytes:
    data = bytearray(_valid_base(tmp_path).read_bytes())
    (count,) = struct.unpack_from("<Q", data, 8)
    struct.pack_into("<Q", data, 8, count + 1)
    return bytes(data)


CASES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "truncated in the data": (_truncated_in_data, "lies outside the file"),
    "truncated in the header": (_truncated_in_header, "truncated"),
    "tensor count +1": (_one_more_tensor_than_listed, "could not load the GGUF file"),
    "tensor count 10^12": (
        lambda _: gguf_bytes([ARCH], [F32_VECTOR], b"\0" * 256, n_tensors=10**12),
        "more than the file can hold",
    ),
    "metadata count 10^9": (lambda _: gguf_bytes([ARCH], [], n_kv=10**9), "more than the file"),
    "offset past the end": (
        lambda _: gguf_bytes([ARCH], [("t.weight", [64], 0, 1 << 20)], b"\0" * 256),
        "lies outside the file",
    ),
    "shape larger than the data": (
        lambda _: gguf_bytes([ARCH], [("t.weight", [64, 100000], 0, 0)], b"\0" * 256),
        "lies outside the file",
    ),
    "overlapping tensors": (
        lambda _: gguf_bytes([ARCH], [("a", [64], 0, 0), ("b", [64], 0, 32)], b"\0" * 512),
        "overlap",
    ),
    "array of 10^9 entries": (
        lambda _: gguf_bytes(
            [ARCH, ("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", F32, 10**9))], []
        ),
        "1,000,000,000 entries",
    ),
    "array of 10^9 strings": (
        lambda _: gguf_bytes(
            [ARCH, ("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 10**9))], []
        ),
        "1,000,000,000 entries",
    ),
    "2 arrays of 600,000 strings": (
        lambda _: gguf_bytes(
            [ARCH]
            + [
                (f"k{i}", ARRAY, struct.pack("<IQ", STRING, 600_000) + _string("x") * 600_000)
                for i in range(2)
            ],
            [],
        ),
        "more than 1,048,576 strings",
    ),
    "string of 4 GB": (
        lambda _: gguf_bytes([ARCH, ("general.name", STRING, struct.pack("<Q", 1 << 32))], []),
        "4,294,967,296 bytes",
    ),
    "unknown tensor type": (
        lambda _: gguf_bytes([ARCH], [("t.weight", [64], 99, 0)], b"\0" * 256),
        "unknown type 99",
    ),
    "unknown value type": (
        lambda _: gguf_bytes([ARCH, ("x", 77, b"")], []),
        "unknown value type 77",
    ),
    "five dimensions": (
        lambda _: gguf_bytes([ARCH], [("t.weight", [2, 2, 2, 2, 2], 0, 0)], b"\0" * 256),
        "5 dimensions",
    ),
    "shape product overflows 64 bits": (
        lambda _: gguf_bytes([ARCH], [("t.weight", [1 << 32] * 3, 0, 0)], b"\0" * 256),
        "impossible shape",
    ),
    "not GGUF": (lambda _: b"\x89PNG\r\n" + b"\0" * 100, "bad magic number"),
    "version 99": (lambda _: b"GGUF" + struct.pack("<I", 99) + b"\0" * 64, "version 99"),
    "no tensors": (lambda _: gguf_bytes([ARCH], []), "holds no tensors"),
    "a part of a split model": (
        lambda _: gguf_bytes(
            [ARCH, ("split.count", U32, struct.pack("<I", 3))], [F32_VECTOR], b"\0" * 256
        ),
        "one of 3 parts",
    ),
}


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One good load first: the 5 s bound is on reading the file, not on importing
    transformers (which alone takes seconds on a cold, shared CPU)."""
    worker.run_sync(load, str(write_gguf(tmp_path_factory.mktemp("warm"), "llama", "Q4_0")))


def _write(tmp_path: Path, case: str) -> Path:
    make, _ = CASES[case]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(make(tmp_path))
    return path


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _refused_by_load(path: Path | str, expected: str) -> str:
    before, start = _peak_mib(), time.monotonic()
    with pytest.raises(LazarusError) as info:
        worker.run_sync(load, str(path), LoadOptions())
    assert time.monotonic() - start < 5
    assert _peak_mib() - before < 256  # nothing of what the file claims was allocated
    message = str(info.value)
    assert "\n" not in message and len(message) < 600
    assert expected in message, message
    return message


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_gguf_file_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    _refused_by_load(_write(tmp_path, case), CASES[case][1])


def test_a_symlink_to_dev_zero_and_a_fifo_are_refused(tmp_path: Path) -> None:
    link = tmp_path / "zero.gguf"
    link.symlink_to("/dev/zero")
    _refused_by_load(link, "not a regular file")
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    _refused_by_load(fifo, "not a regular file")


def test_a_file_claiming_more_blocks_than_it_holds(tmp_path: Path) -> None:
    import gguf

    path = write_gguf(tmp_path, "llama", "F32")
    reader = gguf.GGUFReader(str(path), "r+")
    reader.fields["llama.block_count"].parts[-1][0] = 100000
    reader.data.flush()
    _refused_by_load(path, "says 100000 blocks")


def test_the_memory_estimate_is_checked_before_anything_is_built(tmp_path: Path) -> None:
    path = write_gguf(tmp_path, "llama", "Q4_0")
    before = limits.current()
    limits.configure(replace(before, memory_budget=64 * 1024))
    try:
        _refused_by_load(path, "--memory-budget")
    finally:
        limits.configure(before)


def test_the_allowlist_applies_to_the_file(tmp_path: Path) -> None:
    path = write_gguf(tmp_path, "qwen2", "F32")
    before = limits.current()
    limits.configure(replace(before, allowed_models=(str(tmp_path / "other*"),)))
    try:
        _refused_by_load(path, "not allowed")
        _refused_by_load(path.parent, "not allowed")
    finally:
        limits.configure(before)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with Client(create_server(ModelCache(max_models=2))) as session:
        yield session


@pytest.mark.anyio
async def test_the_server_answers_every_hostile_file_and_stays_alive(
    client: Client, tmp_path: Path
) -> None:
    good = {"model": str(PARITY / "llama"), "prompt": "The capital of France is", "raw": True}
    for i, case in enumerate(sorted(CASES)):
        directory = tmp_path / str(i)
        directory.mkdir()
        path = _write(directory, case)
        with anyio.fail_after(5):
            message = error_line(await client.call_tool("model_info", {"model": str(path)}))
        assert CASES[case][1] in message, (case, message)
    with anyio.fail_after(60):
        assert not (await client.call_tool("analyze", good)).is_error


def test_the_cli_says_one_line_and_exits_2(tmp_path: Path) -> None:
    link = tmp_path / "zero.gguf"
    link.symlink_to("/dev/zero")
    for path in (_write(tmp_path, "array of 10^9 entries"), link):
        proc = subprocess.run(
            [console_script("lazarus"), "introspect", "info", "-m", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
