"""Reading and writing the lens's tensors as safetensors, trusting nothing in the file.

A lens file may come from anywhere (an agent names a path; a download), so the header is parsed
here rather than handed to a library that would believe it: its length must fit the file, it must
be a flat JSON object of known dtypes whose byte ranges tile the data exactly, and every shape's
byte count must equal its range. A header that lies about any of these is one line of error, not
a read past the end or a 40 GB allocation. The data is read with numpy from the bytes already
held; nothing is ever unpickled. No MLX here.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lazarus_mcp.errors import InvalidRequestError

# Header sizes of real files are a few KB; 16 MiB stops a header that claims gigabytes.
MAX_HEADER_BYTES = 16 * 2**20
_DTYPES: dict[str, tuple[np.dtype[np.generic], int]] = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # widened to float32 below
    "F64": (np.dtype("<f8"), 8),
}


class LensFileError(InvalidRequestError):
    """A lens file that is not what it claims to be."""


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def check_regular(path: Path, cap: int) -> int:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise LensFileError(f"cannot read {path.name} ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise LensFileError(f"{path.name} is not a regular file; refused")
    if info.st_size > cap:
        raise LensFileError(f"{path.name} has {info.st_size:,} bytes, more than the cap of {cap:,}")
    return info.st_size


def _entries(
    header: object, data_bytes: int, name: str
) -> dict[str, tuple[str, list[int], int, int]]:
    if not isinstance(header, dict):
        raise LensFileError(f"{name}: the safetensors header is not a JSON object")
    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise LensFileError(f"{name}: tensor '{key[:60]}' has a malformed header entry")
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if dtype not in _DTYPES:
            raise LensFileError(f"{name}: tensor '{key[:60]}' has unsupported dtype {dtype!r:.20}")
        ints = [*shape, *offsets] if isinstance(shape, list) and isinstance(offsets, list) else []
        if len(offsets) != 2 or not all(type(v) is int and v >= 0 for v in ints) or not ints:
            raise LensFileError(f"{name}: tensor '{key[:60]}' has a malformed shape or range")
        start, end = offsets
        expected = math.prod(shape) * _DTYPES[dtype][1]
        if end < start or end - start != expected or end > data_bytes:
            raise LensFileError(
                f"{name}: the header lies about tensor '{key[:60]}' (shape {shape} needs "
                f"{expected:,} bytes, its range is {start:,}..{end:,} of {data_bytes:,})"
            )
        entries[key] = (dtype, shape, start, end)
    ranges = sorted((s, e) for _, _, s, e in entries.values())
    covered = 0
    for start, end in ranges:
        if start != covered:
            raise LensFileError(f"{name}: the header's byte ranges overlap or leave gaps")
        covered = end
    if covered != data_bytes:
        raise LensFileError(f"{name}: the header does not account for the file's data")
    return entries


def read_tensors(path: Path, cap: int) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as float32 numpy arrays, after checking the header."""
    size = check_regular(path, cap)
    with open(path, "rb") as f:
        blob = f.read(cap + 1)
    if len(blob) != size or size < 8:
        raise LensFileError(f"{path.name} is truncated or changed while read")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(MAX_HEADER_BYTES, size - 8):
        raise LensFileError(f"{path.name}: the header claims {header_len:,} bytes; the file lies")
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except (ValueError, RecursionError) as exc:
        raise LensFileError(f"{path.name}: the safetensors header is not JSON") from exc
    data = memoryview(blob)[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    for key, (dtype, shape, start, end) in _entries(header, len(data), path.name).items():
        raw = np.frombuffer(data[start:end], dtype=_DTYPES[dtype][0]).reshape(shape)
        values = _bf16_to_f32(raw) if dtype == "BF16" else raw.astype(np.float32)
        tensors[key] = values
    return tensors


def write_tensors(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write float32 tensors as safetensors (written whole to a temporary name, then renamed)."""
    header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for key in sorted(tensors):
        data = np.ascontiguousarray(tensors[key], dtype="<f4").tobytes()
        header[key] = {
            "dtype": "F32",
            "shape": list(tensors[key].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for chunk in chunks:
            f.write(chunk)
    os.replace(tmp, path)
