"""Content hashes of checkpoint files (manifest v3), computed on the bytes as they are written.

Hashing while writing costs no second read of a file that may be many GB: every byte goes
through `HashingFile.write`, which feeds the hash and the file together. Readers re-hash a
file in chunks (`hash_file`) to compare with the manifest.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
import xxhash

HASH_NAME = "xxh3_64"  # the manifest key holding a file's hash (hex, 16 digits)
_CHUNK = 8 << 20

# torch dtype <-> safetensors dtype name (the dtypes neox and neox-ckpt store)
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
SAFETENSORS_DTYPE_OF_NAME: dict[str, torch.dtype] = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def safetensors_header(
    entries: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
    metadata: Mapping[str, str] | None,
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The bytes that start a safetensors file (8-byte little-endian header length, JSON header
    padded with spaces to a multiple of 8) for tensors stored back to back in `entries` order,
    and each tensor's (begin, end) in the data section that follows.

    `metadata` None writes no `__metadata__` (a mapping, even empty, is written). Raises ValueError for a dtype not in
    SAFETENSORS_DTYPES or a name given twice.
    """
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offsets: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, dtype, shape in entries:
        if name in offsets:
            raise ValueError(f"tensor {name!r} planned twice")
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {dtype}, not storable")
        size = torch.tensor([], dtype=dtype).element_size()
        for s in shape:
            size *= int(s)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offsets[name] = (offset, offset + size)
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offsets


class HashingFile:
    """A binary file opened for writing whose every written byte is also hashed and counted."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hasher = xxhash.xxh3_64()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.hasher.update(data)
        self.f.write(data)
        self.size += len(memoryview(data).cast("B"))
        return self.size

    def record(self) -> dict[str, Any]:
        """The manifest v3 record of what was written: `{"size": n, "xxh3_64": hex}`."""
        return {"size": self.size, HASH_NAME: self.hasher.hexdigest()}


def write_hashed(path: str | Path, fill: Any) -> dict[str, Any]:
    """Create `path`, let `fill(HashingFile)` write it, fsync it; return its manifest record."""
    with open(path, "wb") as f:
        out = HashingFile(f)
        fill(out)
        f.flush()
        os.fsync(f.fileno())
    return out.record()


def write_bytes_hashed(path: str | Path, data: bytes) -> dict[str, Any]:
    return write_hashed(path, lambda out: out.write(data))


def write_json_hashed(path: str | Path, obj: Any) -> dict[str, Any]:
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes_hashed(path, text.encode("utf-8"))


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw (little-endian, C-order) bytes of `t` on the CPU, as safetensors stores them."""
    t = t.detach().to("cpu").contiguous()
    if not t.numel():
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def write_safetensors_hashed(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> dict[str, Any]:
    """Write a safetensors file (the documented layout, see `safetensors_header`) one tensor at
    a time, hashing as it goes; return its manifest record."""
    try:
        head, _ = safetensors_header(
            ((name, t.dtype, tuple(t.shape)) for name, t in tensors.items()),
            metadata,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None

    def fill(out: HashingFile) -> None:
        out.write(head)
        for t in tensors.values():
            out.write(tensor_bytes(t))

    return write_hashed(path, fill)


def hash_file(path: str | Path) -> str:
    """The xxh3_64 hex digest of a whole file, read in chunks."""
    h = xxhash.xxh3_64()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
