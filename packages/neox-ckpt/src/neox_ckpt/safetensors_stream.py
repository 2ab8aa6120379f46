"""Read and write safetensors files one tensor at a time.

`safetensors.torch.save_file` needs every tensor in memory at once and `safe_open` maps the
whole file, which counts towards resident memory as pages are touched. Conversion streams
instead: the header is planned up front (names, dtypes, shapes are known from metadata), each
tensor is then written at its offset in any order, and reads copy one tensor with `readinto`.
The byte layout is the documented safetensors one: an 8-byte little-endian header length, a
JSON header padded with spaces to a multiple of 8, then the raw little-endian tensor bytes.
The dtype table, the header and the tensor bytes are neox-core's (`checkpoint.hashing`), shared
with the checkpoint writer of `neox-train`; what is here is the out-of-order writing and the
reading one tensor at a time.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash

from neox_ckpt.errors import ConversionError
from neox_core.checkpoint.hashing import (
    HASH_NAME,
    SAFETENSORS_DTYPE_OF_NAME,
    SAFETENSORS_DTYPES,
    hash_file,
    safetensors_header,
    tensor_bytes,
)


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return SAFETENSORS_DTYPES[dtype]
    except KeyError:
        raise ConversionError(f"dtype {dtype} cannot be stored in safetensors here") from None


def dtype_from_name(name: str, where: str) -> torch.dtype:
    try:
        return SAFETENSORS_DTYPE_OF_NAME[name]
    except KeyError:
        raise ConversionError(f"{where}: unsupported safetensors dtype {name!r}") from None


def nbytes(dtype: torch.dtype, shape: Iterable[int]) -> int:
    n = torch.tensor([], dtype=dtype).element_size()
    for s in shape:
        n *= int(s)
    return n


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # offset in the data section
    end: int


class SafetensorsReader:
    """The header of a safetensors file, and its tensors read one at a time on request."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                raw_len = f.read(8)
                if len(raw_len) != 8:
                    raise ConversionError(f"{self.path}: too short to be a safetensors file")
                (header_len,) = struct.unpack("<Q", raw_len)
                if header_len > os.path.getsize(self.path) - 8:
                    raise ConversionError(f"{self.path}: header length {header_len} exceeds file")
                header = json.loads(f.read(header_len))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConversionError(f"{self.path}: not a readable safetensors file ({e})") from None
        self.data_start = 8 + header_len
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            begin, end = info["data_offsets"]
            dtype = dtype_from_name(info["dtype"], f"{self.path}: tensor {name!r}")
            shape = tuple(int(s) for s in info["shape"])
            if end - begin != nbytes(dtype, shape):
                raise ConversionError(f"{self.path}: tensor {name!r} has inconsistent offsets")
            self.entries[name] = TensorEntry(name, dtype, shape, int(begin), int(end))

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def read(self, name: str) -> torch.Tensor:
        """A fresh CPU tensor holding `name` (no memory map stays behind)."""
        e = self.entries.get(name)
        if e is None:
            raise ConversionError(f"{self.path}: no tensor {name!r}")
        buf = torch.empty(e.end - e.begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + e.begin)
            got = f.readinto(memoryview(buf.numpy()))
        if got != e.end - e.begin:
            raise ConversionError(f"{self.path}: truncated while reading tensor {name!r}")
        if e.dtype == torch.uint8:
            return buf.reshape(e.shape)
        return buf.view(e.dtype).reshape(e.shape)


class SafetensorsWriter:
    """A safetensors file whose header is fixed first; tensors are then written in any order.

    Written to `<path>` directly: callers stage whole output directories and rename them.
    """

    def __init__(
        self,
        path: str | Path,
        entries: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        planned = [(name, dtype, tuple(shape)) for name, dtype, shape in entries]
        for _, dtype, _ in planned:
            dtype_name(dtype)  # a ConversionError naming the dtype, as before
        try:  # header layout and offsets: neox-core's, as its checkpoint writer uses
            head, offsets = safetensors_header(planned, dict(metadata) if metadata else None)
        except ValueError as e:
            raise ConversionError(f"{self.path}: {e}") from None
        self.entries: dict[str, TensorEntry] = {
            name: TensorEntry(name, dtype, shape, *offsets[name]) for name, dtype, shape in planned
        }
        self.data_start = len(head)
        self.total = self.data_start + (max(e for _, e in offsets.values()) if offsets else 0)
        self._written: set[str] = set()
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._hash = xxhash.xxh3_64()
        self._f.write(head)
        self._hash.update(head)
        self._hashed_to = len(head)  # bytes from the start hashed so far (writes in file order)
        self._f.truncate(self.total)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        e = self.entries.get(name)
        if e is None:
            raise ConversionError(f"{self.path}: tensor {name!r} was not planned for this file")
        if tuple(tensor.shape) != e.shape or tensor.dtype != e.dtype:
            raise ConversionError(
                f"{self.path}: tensor {name!r} is {tuple(tensor.shape)} {tensor.dtype}, "
                f"planned {e.shape} {e.dtype}"
            )
        self._f.seek(self.data_start + e.begin)
        view = tensor_bytes(tensor)
        self._f.write(view)
        if self.data_start + e.begin == self._hashed_to:  # in order: hash it in passing
            self._hash.update(view)
            self._hashed_to += e.end - e.begin
        self._written.add(name)

    def close(self) -> dict[str, object]:
        """Flush and fsync; the file's manifest v3 record (size, xxh3_64 content hash).

        The hash is taken while writing when tensors arrive in file order (converters write
        them so); only a file written out of order is read back once to hash it.
        """
        missing = [n for n in self.entries if n not in self._written]
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        if missing:
            raise ConversionError(f"{self.path}: tensors never written: {missing[:5]}")
        in_order = self._hashed_to == self.total
        digest = self._hash.hexdigest() if in_order else hash_file(self.path)
        return {"size": self.total, HASH_NAME: digest}

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
