"""Is every file of a checkpoint what its manifest recorded? Nothing damaged is trusted.

Always checked (cheap): each listed file exists with its recorded size, and each safetensors
file has a well-formed header whose tensors exactly fill the file. With `hashes` (manifest
v3 and `checkpoint_verify: hash`), each file's content hash is recomputed and compared too.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from neox_core.checkpoint.hashing import HASH_NAME, hash_file

VERIFY_MODES = ("hash", "size")

_ITEM_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip
_MAX_HEADER = 100 << 20


def file_records(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`files` of any manifest version as `{name: {"size": n[, "xxh3_64": hex]}}` (v1 and v2
    record only the size, as a bare number)."""
    out: dict[str, dict[str, Any]] = {}
    for name, rec in (manifest.get("files") or {}).items():
        out[name] = {"size": rec} if isinstance(rec, int) else dict(rec)
    return out


def safetensors_header_problem(path: Path) -> str | None:
    """Why `path` is not a well-formed safetensors file, or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                return "too short for a safetensors header"
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > _MAX_HEADER:
                return f"safetensors header length {n} does not fit the file ({size} bytes)"
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"safetensors header unreadable ({e})"
    if not isinstance(header, dict):
        return "safetensors header is not a JSON object"
    meta = header.pop("__metadata__", None) or {}
    try:
        if "neox_shards" in meta:
            json.loads(meta["neox_shards"])
        spans = []
        for name, info in header.items():
            item = _ITEM_SIZES[info["dtype"]]
            begin, end = (int(x) for x in info["data_offsets"])
            count = 1
            for s in info["shape"]:
                count *= int(s)
            if end - begin != count * item:
                return f"safetensors header: tensor {name!r} has inconsistent offsets"
            spans.append((begin, end))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"safetensors header malformed ({type(e).__name__}: {e})"
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            return "safetensors header: tensor data has gaps or overlaps"
        pos = end
    if 8 + n + pos != size:
        return f"safetensors header describes {8 + n + pos} bytes, the file has {size}"
    return None


def file_problem(path: Path, record: Mapping[str, Any], hashes: bool) -> str | None:
    """Why the file at `path` is not the one `record` describes, or None."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != record.get("size"):
        kind = "truncated" if size < int(record.get("size") or 0) else "wrong size"
        return f"{kind}: {size} bytes, the manifest says {record.get('size')}"
    if path.suffix == ".safetensors":
        why = safetensors_header_problem(path)
        if why is not None:
            return why
    if hashes and HASH_NAME in record:
        got = hash_file(path)
        if got != record[HASH_NAME]:
            return f"content hash {HASH_NAME} {got} differs from the manifest's {record[HASH_NAME]}"
    return None


def file_problems(
    ckpt: Path, manifest: Mapping[str, Any], hashes: bool, only: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """(file, why) for every listed file (or those in `only`) that is not as recorded."""
    records = file_records(manifest)
    names = sorted(records) if only is None else sorted(only)
    out = []
    for name in names:
        if os.path.isabs(name) or ".." in Path(name).parts:
            out.append((name, "listed outside the checkpoint directory"))
            continue
        why = file_problem(ckpt / name, records[name], hashes)
        if why is not None:
            out.append((name, why))
    return out
