"""Check a `.bin/.idx` pair against `docs/formats/indexed-dataset.md` before trusting it.

A truncated copy or a half-synced dataset otherwise shows up hours into training as a crash in
a DataLoader worker or as silently wrong samples. `check_structure` is the cheap part (header,
index arrays, `.bin` size; no token read) that `neox-train` runs on every data path at start-up;
`verify` adds the token scan against a vocabulary, streamed in chunks so memory stays flat.

Every problem is one line that starts with the file it is about, and gives the byte offset or
item/document number where one exists. Only numpy and the standard library are imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neox_data.indexed_dataset import (
    _HEADER,
    DTYPE_CODES,
    FORMAT_VERSION,
    HEADER_SIZE,
    LEGACY_MAGIC,
    MAGIC,
    IndexedDatasetError,
    MMapIndexedDataset,
    data_path,
    index_path,
)

# label datasets mark untrained positions with -100; a vocabulary check lets that one through
IGNORE_LABEL = -100
SCAN_CHUNK_TOKENS = 1 << 22


@dataclass
class Summary:
    """What a sound pair holds (for the one OK line)."""

    dtype: np.dtype
    items: int
    documents: int
    tokens: int


@dataclass
class _Arrays:
    dtype: np.dtype
    sizes: np.ndarray
    pointers: np.ndarray
    doc_idx: np.ndarray
    sizes_at: int  # byte offset of sizes[0] in the .idx (-1 for a legacy index)
    pointers_at: int
    doc_idx_at: int


def _read_index(idx: Path, problems: list[str]) -> _Arrays | None:
    """Header and arrays of an MMIDIDX index; None (with the problem noted) when unreadable."""
    size = idx.stat().st_size
    with open(idx, "rb") as fh:
        head = fh.read(HEADER_SIZE)
    if head[: len(LEGACY_MAGIC)] == LEGACY_MAGIC:
        return _read_legacy(idx, problems)
    if len(head) < HEADER_SIZE:
        problems.append(f"{idx}: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
        return None
    magic, version, code, n, d = _HEADER.unpack(head)
    if magic != MAGIC:
        problems.append(f"{idx}: byte 0: magic {magic!r}, expected {MAGIC!r}")
        return None
    if version != FORMAT_VERSION:
        problems.append(f"{idx}: byte 9: index version {version}, expected {FORMAT_VERSION}")
        return None
    if code not in DTYPE_CODES:
        problems.append(f"{idx}: byte 17: unknown dtype code {code} (known: 1-8)")
        return None
    expected = HEADER_SIZE + 12 * n + 8 * d
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        problems.append(
            f"{idx}: {size} bytes, but the header (items N={n}, doc_idx D={d}) implies "
            f"{expected}: the index is {what}"
        )
        return None
    buf = np.memmap(idx, mode="r", dtype=np.uint8) if size else np.zeros(0, np.uint8)
    p_at, d_at = HEADER_SIZE + 4 * n, HEADER_SIZE + 12 * n
    return _Arrays(
        dtype=DTYPE_CODES[code],
        sizes=np.frombuffer(buf, dtype="<i4", count=n, offset=HEADER_SIZE),
        pointers=np.frombuffer(buf, dtype="<i8", count=n, offset=p_at),
        doc_idx=np.frombuffer(buf, dtype="<i8", count=d, offset=d_at),
        sizes_at=HEADER_SIZE,
        pointers_at=p_at,
        doc_idx_at=d_at,
    )


def _read_legacy(idx: Path, problems: list[str]) -> _Arrays | None:
    """An old TNTIDX index, through the reader (it has its own header checks)."""
    prefix = str(idx)[: -len(".idx")]
    try:
        ds = MMapIndexedDataset(prefix)
    except IndexedDatasetError as e:
        problems.append(str(e))
        return None
    return _Arrays(ds.dtype, ds.sizes, ds.pointers, ds.doc_idx, -1, -1, -1)


def _at(base: int, i: int, width: int) -> str:
    return f"byte {base + width * i}, " if base >= 0 else ""


def _check_arrays(idx: Path, bin_: Path, a: _Arrays, problems: list[str]) -> None:
    item = a.dtype.itemsize
    bin_size = bin_.stat().st_size
    sizes = a.sizes.astype(np.int64)
    n = len(sizes)
    negative = np.flatnonzero(sizes < 0)
    if len(negative):
        i = int(negative[0])
        problems.append(
            f"{idx}: {_at(a.sizes_at, i, 4)}item {i}: negative size {int(sizes[i])} "
            f"({len(negative)} items in all)"
        )
    if n:
        ptr = a.pointers
        expected = np.zeros(n, dtype=np.int64)
        np.cumsum(sizes[:-1] * item, out=expected[1:])
        bad = np.flatnonzero(ptr != expected)
        if len(bad):
            i = int(bad[0])
            problems.append(
                f"{idx}: {_at(a.pointers_at, i, 8)}item {i}: pointer {int(ptr[i])}, expected "
                f"{int(expected[i])} (the running sum of sizes x {item} bytes)"
            )
        if n > 1 and (np.diff(ptr) < 0).any():
            i = int(np.flatnonzero(np.diff(ptr) < 0)[0]) + 1
            problems.append(f"{idx}: {_at(a.pointers_at, i, 8)}item {i}: pointers decrease")
        ends = ptr + sizes * item
        outside = np.flatnonzero((ptr < 0) | (ends > bin_size))
        if len(outside):
            i = int(outside[0])
            problems.append(
                f"{bin_}: {bin_size} bytes, but item {i} spans bytes {int(ptr[i])}-"
                f"{int(ends[i])}: the .bin is truncated or belongs to another index"
            )
        end = int(ptr[-1]) + int(sizes[-1]) * item
    else:
        end = 0
    if bin_size != end and not any(p.startswith(f"{bin_}:") for p in problems):
        problems.append(
            f"{bin_}: {bin_size} bytes, expected {end} (last pointer + last size x {item}): "
            + ("truncated" if bin_size < end else "trailing bytes")
        )
    d = a.doc_idx
    if len(d) == 0:
        problems.append(f"{idx}: doc_idx is empty (it holds at least the leading 0)")
        return
    if int(d[0]) != 0:
        problems.append(f"{idx}: {_at(a.doc_idx_at, 0, 8)}doc_idx starts at {int(d[0])}, not 0")
    dec = np.flatnonzero(np.diff(d) < 0)
    if len(dec):
        j = int(dec[0]) + 1
        problems.append(
            f"{idx}: {_at(a.doc_idx_at, j, 8)}document {j}: doc_idx decreases "
            f"({int(d[j - 1])} -> {int(d[j])})"
        )
    if int(d[-1]) != n:
        problems.append(
            f"{idx}: {_at(a.doc_idx_at, len(d) - 1, 8)}doc_idx ends at {int(d[-1])}, not at "
            f"the item count {n}"
        )


def _scan_tokens(bin_: Path, a: _Arrays, vocab_size: int, problems: list[str]) -> None:
    """First out-of-vocabulary id (byte offset, item, document) and how many there are."""
    if a.dtype.kind not in "iu":
        return
    item = a.dtype.itemsize
    count = bin_.stat().st_size // item
    if count == 0:
        return
    data = np.memmap(bin_, mode="r", dtype=a.dtype.newbyteorder("<"), shape=(count,))
    first: int | None = None
    bad_total = 0
    for start in range(0, count, SCAN_CHUNK_TOKENS):
        chunk = data[start : start + SCAN_CHUNK_TOKENS]
        bad = (chunk >= vocab_size) | ((chunk < 0) & (chunk != IGNORE_LABEL))
        if bad.any():
            hits = np.flatnonzero(bad)
            bad_total += len(hits)
            if first is None:
                first = start + int(hits[0])
    if first is None:
        return
    offset = first * item
    where = f"byte {offset}"
    if len(a.pointers):
        i = int(np.searchsorted(a.pointers, offset, side="right")) - 1
        doc = int(np.searchsorted(a.doc_idx, i, side="right")) - 1
        where += f", item {i}, document {doc}"
    problems.append(
        f"{bin_}: {where}: token id {int(data[first])} is outside the vocabulary of "
        f"{vocab_size} ({bad_total} such tokens)"
    )


def _check(prefix: str | os.PathLike[str], vocab_size: int | None) -> tuple[list[str], Summary]:
    idx, bin_ = index_path(prefix), data_path(prefix)
    missing = [f"{f}: file not found" for f in (idx, bin_) if not f.is_file()]
    empty = Summary(np.dtype(np.uint8), 0, 0, 0)
    if missing:
        return missing, empty
    problems: list[str] = []
    arrays = _read_index(idx, problems)
    if arrays is None:
        return problems, empty
    _check_arrays(idx, bin_, arrays, problems)
    if vocab_size is not None and not problems:
        _scan_tokens(bin_, arrays, vocab_size, problems)
    summary = Summary(
        dtype=arrays.dtype,
        items=len(arrays.sizes),
        documents=max(len(arrays.doc_idx) - 1, 0),
        tokens=int(arrays.sizes.sum(dtype=np.int64)),
    )
    return problems, summary


def check_structure(prefix: str | os.PathLike[str]) -> list[str]:
    """Header, index arrays and `.bin` size; no token is read (cheap at start-up)."""
    return _check(prefix, None)[0]


def verify(prefix: str | os.PathLike[str], vocab_size: int | None = None) -> list[str]:
    """`check_structure`, then every token id against `vocab_size` when it is given."""
    return _check(prefix, vocab_size)[0]


def verify_with_summary(
    prefix: str | os.PathLike[str], vocab_size: int | None = None
) -> tuple[list[str], Summary]:
    """`verify` plus the counts the CLI prints on success."""
    return _check(prefix, vocab_size)
