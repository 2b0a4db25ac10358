"""A GGUF file's header, read with strict bounds before anything else opens the file.

``mx.load``, the ``gguf`` package and transformers trust a GGUF header: a metadata array that
claims 10^9 entries is allocated, a tensor whose shape product overflows is mapped, a symlink to
``/dev/zero`` is read until memory runs out. An agent may name any file, so this reader parses
the header itself, from a regular file, with every count, length, type, rank, shape and offset
checked against caps and against the file's real size before it is used; anything else is a
one-line :class:`ModelLoadError`. Only a header that passes is handed to the other readers.

Measured: the 98 MB SmolLM2-135M Q4_1 file's header (33 keys, a 49,152-token vocabulary and
48,900 merges) parses in about 0.1 s. No MLX here.
"""

from __future__ import annotations

import itertools
import math
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lazarus_mcp.errors import ModelLoadError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_TENSORS = 1 << 16
MAX_KV = 1 << 16
# Bounds on what parsing may cost (time and Python objects), whatever the file's size: the
# largest vocabularies (262,144 tokens, ~500,000 merges) fit well inside them.
MAX_ARRAY = 1 << 22  # entries of one numeric array
MAX_STRINGS = 1 << 20  # strings in all the metadata (under a second of parsing)
MAX_STRING = 1 << 24  # chat templates run to ~100 KB; a token or a key to a few bytes
MAX_KEY = 1 << 16
MAX_HEADER_BYTES = 1 << 30
MAX_DIMS = 4
MAX_DIM = 1 << 40
MAX_ELEMENTS = 1 << 48
DEFAULT_ALIGNMENT = 32

# ggml tensor types: name, elements per block, bytes per block (llama.cpp's ggml.h).
TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}  # fmt: skip

# general.file_type (llama.cpp's llama_ftype): what the file calls itself, e.g. Q4_K_M.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE",
}  # fmt: skip

# Metadata value types: struct format of the fixed-size ones (8: string, 9: array).
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
          10: "<u8", 11: "<i8", 12: "<f8"}  # fmt: skip
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # row-major (numpy / MLX order: the last dimension is contiguous)
    type_id: int
    offset: int  # absolute, in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES[self.type_id][0]


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    data_offset: int
    file_size: int
    type_counts: dict[str, int] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def file_type(self) -> str | None:
        value = self.metadata.get("general.file_type")
        if isinstance(value, int) and value in FILE_TYPES:
            return FILE_TYPES[value]
        if self.type_counts:  # files without the key: the most common type of a 2-D tensor
            return max(self.type_counts, key=lambda t: self.type_counts[t])
        return None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _fail(path: Path, detail: str) -> ModelLoadError:
    return ModelLoadError(f"could not load the GGUF file {path.name[:120]}: {detail}")


_U64 = struct.Struct("<Q")
CHUNK = 1 << 22


class _Reader:
    """Reads only what the file has: every length is checked against what is left. The file is
    read in chunks of 4 MiB into a buffer the parsing indexes (a vocabulary is hundreds of
    thousands of strings: one file read each would take seconds)."""

    def __init__(self, f: BinaryIO, path: Path, size: int, cap: int) -> None:
        self.f, self.path, self.size = f, path, size
        self.pos = 0
        self.cap = min(size, cap)
        self.strings = 0
        self.buf = b""
        self.start = 0  # file offset of buf[0]

    def _fill(self, n: int, what: str) -> None:
        """Make ``buf`` hold the n bytes at ``pos``."""
        if n < 0 or self.pos + n > self.cap:
            if self.pos + n > self.size:
                raise _fail(self.path, f"truncated in {what}")
            raise _fail(self.path, f"its header is larger than {self.cap:,} bytes")
        if self.pos + n <= self.start + len(self.buf):
            return
        self.f.seek(self.pos)
        self.buf = self.f.read(min(max(n, CHUNK), self.cap - self.pos))
        self.start = self.pos
        if len(self.buf) < n:
            raise _fail(self.path, f"truncated in {what}")

    def take(self, n: int, what: str) -> bytes:
        self._fill(n, what)
        offset = self.pos - self.start
        self.pos += n
        return self.buf[offset : offset + n]

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, cap: int, min_item_bytes: int) -> int:
        n = int(self.scalar("<Q", what))
        # Each item takes at least min_item_bytes of the file: a count the file cannot hold lies.
        if n > cap or n * min_item_bytes > self.size - self.pos:
            raise _fail(
                self.path,
                f"{what} claims {n:,} entries, more than the file can hold (truncated or corrupt)",
            )
        return n

    def string(self, what: str, cap: int = MAX_STRING) -> str:
        n = int(self.scalar("<Q", what))
        if n > cap:
            raise _fail(self.path, f"{what} is a string of {n:,} bytes (limit {cap:,})")
        # llama.cpp vocabularies may hold byte tokens that are not valid UTF-8 on their own.
        return self.take(n, what).decode("utf-8", errors="replace")

    def _strings(self, n: int, what: str) -> list[str]:
        """``string`` n times, inlined: about 0.5 us a string instead of 3."""
        out = []
        unpack = _U64.unpack_from
        for _ in range(n):
            if self.pos + 8 > self.start + len(self.buf):
                self._fill(8, what)
            (length,) = unpack(self.buf, self.pos - self.start)
            if length > MAX_STRING:
                raise _fail(self.path, f"{what} holds a string of {length:,} bytes")
            self.pos += 8
            if self.pos + length > self.start + len(self.buf):
                self._fill(length, what)
            offset = self.pos - self.start
            out.append(self.buf[offset : offset + length].decode("utf-8", errors="replace"))
            self.pos += length
        return out

    def value(self, type_id: int, what: str) -> Any:
        if type_id in _SCALARS:
            return self.scalar(_SCALARS[type_id], what)
        if type_id == _STRING:
            return self.string(what)
        if type_id == _ARRAY:
            item_type = int(self.scalar("<I", what))
            if item_type in _NUMPY:
                width = np.dtype(_NUMPY[item_type]).itemsize
                n = self.count(what, MAX_ARRAY, width)
                items = np.frombuffer(self.take(n * width, what), dtype=_NUMPY[item_type])
                return items.astype(bool).tolist() if item_type == 7 else items.tolist()
            if item_type == _STRING:
                n = self.count(what, MAX_STRINGS, 8)
                self.strings += n
                if self.strings > MAX_STRINGS:
                    raise _fail(self.path, f"its metadata holds more than {MAX_STRINGS:,} strings")
                return self._strings(n, what)
            raise _fail(self.path, f"{what} is an array of unsupported type {item_type}")
        raise _fail(self.path, f"{what} has an unknown value type {type_id}")


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    """The file opened for reading if it is a regular file (not a device, FIFO or directory,
    also through symlinks), and its size."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _fail(path, f"cannot open it ({exc.strerror})") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _fail(path, "it is not a regular file; refused")
    return os.fdopen(fd, "rb"), int(info.st_size)


def _tensor(r: _Reader, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string(f"the name of tensor {index}", MAX_KEY)
    label = repr(name[:80])
    n_dims = int(r.scalar("<I", f"tensor {label}"))
    if not 1 <= n_dims <= MAX_DIMS:
        raise _fail(r.path, f"tensor {label} has {n_dims} dimensions (at most {MAX_DIMS})")
    dims = [int(r.scalar("<Q", f"tensor {label}")) for _ in range(n_dims)]
    if any(d > MAX_DIM for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        raise _fail(r.path, f"tensor {label} has an impossible shape {dims}")
    type_id = int(r.scalar("<I", f"tensor {label}"))
    if type_id not in TENSOR_TYPES:
        raise _fail(r.path, f"tensor {label} has an unknown type {type_id}")
    offset = int(r.scalar("<Q", f"tensor {label}"))
    # GGUF lists dimensions fastest first; numpy and MLX want them slowest first.
    return name, tuple(reversed(dims)), type_id, offset


def _nbytes(path: Path, name: str, shape: tuple[int, ...], type_id: int) -> int:
    type_name, block, block_bytes = TENSOR_TYPES[type_id]
    if shape[-1] % block:
        raise _fail(
            path,
            f"tensor {name[:80]!r} has rows of {shape[-1]} values, not whole {type_name} blocks",
        )
    return math.prod(shape) // block * block_bytes


def read_header(path: Path, max_header_bytes: int = MAX_HEADER_BYTES) -> GGUFHeader:
    """The header of the GGUF file at ``path``, every part checked (see the module docstring)."""
    f, size = _open_regular(path)
    with f:
        r = _Reader(f, path, size, max_header_bytes)
        if r.take(4, "the magic number") != MAGIC:
            raise _fail(path, "not a GGUF file (bad magic number)")
        version = int(r.scalar("<I", "the version"))
        if version not in VERSIONS:
            raise _fail(path, f"unsupported GGUF version {version}")
        n_tensors = r.count("the tensor count", MAX_TENSORS, 24)
        n_kv = r.count("the metadata count", MAX_KV, 12)
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = r.string(f"metadata key {i}", MAX_KEY)
            metadata[key] = r.value(int(r.scalar("<I", key[:80])), f"metadata {key[:80]!r}")
        raw = [_tensor(r, i) for i in range(n_tensors)]
        header_end = r.pos
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or not 1 <= alignment <= 1 << 16:
        raise _fail(path, f"bad general.alignment {str(alignment)[:20]}")
    data_offset = -(-header_end // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, shape, type_id, offset in raw:
        nbytes = _nbytes(path, name, shape, type_id)
        start = data_offset + offset
        if offset % alignment or start + nbytes > size:
            raise _fail(path, f"tensor {name[:80]!r} lies outside the file (truncated or corrupt)")
        if name in tensors:
            raise _fail(path, f"tensor {name[:80]!r} is listed twice")
        tensors[name] = TensorInfo(name, shape, type_id, start, nbytes)
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values())
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            raise _fail(path, f"tensors {first[:60]!r} and {second[:60]!r} overlap")
    counts = Counter(t.type_name for t in tensors.values())
    return GGUFHeader(path, version, metadata, tensors, data_offset, size, dict(counts))
