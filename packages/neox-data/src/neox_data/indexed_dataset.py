"""The MMap indexed dataset (`.bin` + `.idx`), byte-compatible with GPT-NeoX and Megatron.

The byte layout is specified in `docs/formats/indexed-dataset.md`. This module holds the
memory-mapped reader that training samples from, the streaming writer the tokenizer feeds,
and a merge that keeps document boundaries (GPT-NeoX's own merge drops them).

Reader API (what `neox-core` relies on): `MMapIndexedDataset(prefix)` with `len()`,
`sizes`, `pointers`, `doc_idx`, `dtype`, `num_tokens`, `num_docs`, `get(idx, offset, length)`,
`[idx]`, `document(d)`, `bin_tokens()`. Arrays returned are read-only views into the map.
"""

from __future__ import annotations

import os
import struct
import uuid
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

FORMAT_VERSION = 1
MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N items, D doc_idx length
HEADER_SIZE = _HEADER.size  # 34 bytes
LEGACY_MAGIC = b"TNTIDX\x00\x00"
_LEGACY_HEADER = struct.Struct("<8sQQQQQQ")  # magic, version, code, elsize, N, S, D

DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float32),
    7: np.dtype(np.float64),
    8: np.dtype(np.uint16),
}

# GPT-NeoX switches to int32 a little below 2**16; keep the same threshold so files match.
UINT16_VOCAB_LIMIT = 65500


class IndexedDatasetError(ValueError):
    """A `.bin/.idx` pair that is missing, malformed or inconsistent."""


def best_fitting_dtype(vocab_size: int | None) -> np.dtype:
    """Token dtype GPT-NeoX picks: uint16 below 65500 tokens of vocabulary, else int32."""
    if vocab_size is not None and vocab_size < UINT16_VOCAB_LIMIT:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def dtype_code(dtype: np.dtype | type) -> int:
    dt = np.dtype(dtype)
    for code, known in DTYPE_CODES.items():
        if dt == known and dt.byteorder != ">":
            return code
    raise IndexedDatasetError(f"dtype {dt} has no code in the indexed-dataset format")


def data_path(prefix: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(prefix)}.bin")


def index_path(prefix: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(prefix)}.idx")


def dataset_exists(prefix: str | os.PathLike[str]) -> bool:
    return data_path(prefix).is_file() and index_path(prefix).is_file()


class MMapIndexedDataset:
    """Random access to the items of a `.bin/.idx` pair without loading it.

    An *item* is one token array (a row of `sizes`); a *document* is the run of items
    between two consecutive `doc_idx` entries. Files written by neox-data and by the usual
    GPT-NeoX preprocessing hold exactly one item per document.
    """

    def __init__(self, prefix: str | os.PathLike[str]) -> None:
        self._prefix = os.fspath(prefix)
        self._open()

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> None:
        idx_file, bin_file = index_path(self._prefix), data_path(self._prefix)
        for f in (idx_file, bin_file):
            if not f.is_file():
                raise IndexedDatasetError(f"{f}: file not found (prefix {self._prefix!r})")
        idx_size = idx_file.stat().st_size
        with open(idx_file, "rb") as fh:
            head = fh.read(max(HEADER_SIZE, _LEGACY_HEADER.size))
        self._legacy = head[:8] == LEGACY_MAGIC
        if self._legacy:
            self._read_legacy_index(idx_file, idx_size, head)
        else:
            self._read_index(idx_file, idx_size, head)
        bin_size = bin_file.stat().st_size
        if len(self._sizes):
            end = int(self._pointers[-1]) + int(self._sizes[-1]) * self._dtype.itemsize
            if end > bin_size:
                raise IndexedDatasetError(
                    f"{bin_file}: {bin_size} bytes, but the index points to byte {end}: "
                    "the .bin is truncated or belongs to another index"
                )
        # np.memmap refuses empty files; an empty dataset reads from an empty buffer.
        if bin_size:
            self._bin_map: np.ndarray = np.memmap(bin_file, mode="r", dtype=np.uint8)
        else:
            self._bin_map = np.zeros(0, dtype=np.uint8)
        self._bin_size = bin_size

    def _read_index(self, idx_file: Path, idx_size: int, head: bytes) -> None:
        if len(head) < HEADER_SIZE or head[:9] != MAGIC:
            raise IndexedDatasetError(
                f"{idx_file}: not an MMIDIDX index (magic {head[:9]!r}, expected {MAGIC!r})"
            )
        _, version, code, n_items, n_doc_idx = _HEADER.unpack(head[:HEADER_SIZE])
        if version != FORMAT_VERSION:
            raise IndexedDatasetError(f"{idx_file}: index version {version}, expected 1")
        if code not in DTYPE_CODES:
            raise IndexedDatasetError(f"{idx_file}: unknown dtype code {code}")
        expected = HEADER_SIZE + 12 * n_items + 8 * n_doc_idx
        if idx_size != expected:
            raise IndexedDatasetError(
                f"{idx_file}: {idx_size} bytes, but the header (N={n_items}, D={n_doc_idx}) "
                f"implies {expected}: truncated or corrupt"
            )
        self._dtype = DTYPE_CODES[code]
        self._idx_map = np.memmap(idx_file, mode="r", dtype=np.uint8)
        buf = self._idx_map
        off = HEADER_SIZE
        self._sizes = np.frombuffer(buf, dtype="<i4", count=n_items, offset=off)
        off += 4 * n_items
        self._pointers = np.frombuffer(buf, dtype="<i8", count=n_items, offset=off)
        off += 8 * n_items
        self._doc_idx = np.frombuffer(buf, dtype="<i8", count=n_doc_idx, offset=off)

    def _read_legacy_index(self, idx_file: Path, idx_size: int, head: bytes) -> None:
        """The older fairseq/Megatron `TNTIDX` index (read only; 1-D items only)."""
        if len(head) < _LEGACY_HEADER.size:
            raise IndexedDatasetError(f"{idx_file}: TNTIDX index truncated in its header")
        _, version, code, elsize, n_items, n_sizes, n_doc = _LEGACY_HEADER.unpack(
            head[: _LEGACY_HEADER.size]
        )
        if version != 1 or code not in DTYPE_CODES or DTYPE_CODES[code].kind not in "iu":
            raise IndexedDatasetError(f"{idx_file}: unsupported TNTIDX (v{version}, dtype {code})")
        expected = _LEGACY_HEADER.size + 8 * (2 * (n_items + 1) + n_sizes + n_doc)
        if idx_size != expected:
            raise IndexedDatasetError(f"{idx_file}: {idx_size} bytes, expected {expected}")
        self._dtype = DTYPE_CODES[code]
        if elsize != self._dtype.itemsize:
            raise IndexedDatasetError(f"{idx_file}: element size {elsize} for dtype {self._dtype}")
        raw = np.fromfile(idx_file, dtype="<i8", offset=_LEGACY_HEADER.size)
        dim_offsets = raw[: n_items + 1]
        data_offsets = raw[n_items + 1 : 2 * (n_items + 1)]
        sizes = raw[2 * (n_items + 1) : 2 * (n_items + 1) + n_sizes]
        if n_sizes != n_items or not np.array_equal(dim_offsets, np.arange(n_items + 1)):
            raise IndexedDatasetError(
                f"{idx_file}: multi-dimensional TNTIDX items are not supported"
            )
        self._idx_map = np.zeros(0, dtype=np.uint8)
        self._sizes = sizes.astype("<i4")
        self._pointers = data_offsets[:-1] * elsize
        self._doc_idx = raw[2 * (n_items + 1) + n_sizes :]
        for a in (self._sizes, self._pointers, self._doc_idx):
            a.flags.writeable = False

    @property
    def is_legacy(self) -> bool:
        """True for an old `TNTIDX` index (convert it with `merge_datasets([prefix], out)`)."""
        return self._legacy

    # -- pickling (DataLoader workers re-open the maps instead of copying them) ----------
    def __getstate__(self) -> str:
        return self._prefix

    def __setstate__(self, state: str) -> None:
        self._prefix = state
        self._open()

    def __enter__(self) -> MMapIndexedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the memory maps (views handed out earlier keep them alive until freed)."""
        self._bin_map = np.zeros(0, dtype=np.uint8)
        self._idx_map = np.zeros(0, dtype=np.uint8)

    # -- metadata ------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def sizes(self) -> np.ndarray:
        """Tokens per item, int32."""
        return self._sizes

    @property
    def pointers(self) -> np.ndarray:
        """Byte offset of each item in the `.bin`, int64."""
        return self._pointers

    @property
    def doc_idx(self) -> np.ndarray:
        """Item index where each document starts, then the item count: int64, length docs+1."""
        return self._doc_idx

    @property
    def num_docs(self) -> int:
        return max(len(self._doc_idx) - 1, 0)

    @property
    def num_tokens(self) -> int:
        return int(self._sizes.sum(dtype=np.int64))

    @property
    def bin_size(self) -> int:
        return self._bin_size

    def __len__(self) -> int:
        return len(self._sizes)

    # -- data ----------------------------------------------------------------------------
    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens `offset : offset+length` of item `idx` (to its end when length is None)."""
        n = len(self._sizes)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"item {idx} out of range for {n} items in {self._prefix}")
        size = int(self._sizes[idx])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(
                f"slice offset={offset} length={length} outside item {idx} of {size} tokens"
            )
        start = int(self._pointers[idx]) + offset * self._dtype.itemsize
        return np.frombuffer(self._bin_map, dtype=self._dtype, count=length, offset=start)

    def __getitem__(self, idx: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError("slices of an indexed dataset must be contiguous (step 1)")
            return [self.get(i) for i in range(start, stop)]
        return self.get(int(idx))

    def bin_tokens(self) -> np.ndarray:
        """The whole `.bin` as one array of the dataset dtype (for scans and statistics)."""
        return np.frombuffer(
            self._bin_map, dtype=self._dtype, count=self._bin_size // self._dtype.itemsize
        )

    def document(self, doc: int) -> np.ndarray:
        """All tokens of document `doc` (its items joined)."""
        if not 0 <= doc < self.num_docs:
            raise IndexError(f"document {doc} out of range for {self.num_docs} documents")
        first, last = int(self._doc_idx[doc]), int(self._doc_idx[doc + 1])
        if last - first == 1:
            return self.get(first)
        parts = [self.get(i) for i in range(first, last)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self._dtype)

    def __repr__(self) -> str:
        return (
            f"MMapIndexedDataset({self._prefix!r}, items={len(self)}, docs={self.num_docs}, "
            f"tokens={self.num_tokens}, dtype={self._dtype})"
        )


def verify(prefix: str | os.PathLike[str], vocab_size: int | None = None) -> list[str]:
    """Every inconsistency found in a pair (empty when it is sound); does not raise on them."""
    try:
        ds = MMapIndexedDataset(prefix)
    except IndexedDatasetError as e:
        return [str(e)]
    problems: list[str] = []
    sizes = ds.sizes.astype(np.int64)
    item = ds.dtype.itemsize
    if (sizes < 0).any():
        problems.append(f"{int((sizes < 0).sum())} items have a negative size")
    if len(sizes):
        expected_ptr = np.zeros(len(sizes), dtype=np.int64)
        np.cumsum(sizes[:-1] * item, out=expected_ptr[1:])
        if not np.array_equal(ds.pointers, expected_ptr):
            bad = int(np.flatnonzero(ds.pointers != expected_ptr)[0])
            problems.append(
                f"pointers are not the running sum of sizes (first mismatch at item {bad})"
            )
    total = int(sizes.sum()) * item
    if ds.bin_size != total:
        problems.append(f".bin holds {ds.bin_size} bytes, sizes add up to {total}")
    d = ds.doc_idx
    if len(d) == 0:
        problems.append("doc_idx is empty (it must at least hold 0)")
    else:
        if d[0] != 0:
            problems.append(f"doc_idx starts at {int(d[0])}, not 0")
        if len(d) > 1 and (np.diff(d) < 0).any():
            problems.append("doc_idx is not non-decreasing")
        if int(d[-1]) != len(ds):
            problems.append(f"doc_idx ends at {int(d[-1])}, not at the item count {len(ds)}")
    if vocab_size is not None and ds.num_tokens and ds.dtype.kind in "iu":
        data = ds.bin_tokens()
        lo, hi = int(data.min()), int(data.max())
        if hi >= vocab_size or (lo < 0 and lo != -100):
            problems.append(f"token ids span [{lo}, {hi}], outside the vocabulary of {vocab_size}")
    ds.close()
    return problems


class IndexedDatasetWriter:
    """Streams items into `<prefix>.bin/.idx` through temporary files.

    Nothing appears under the final names until `finalize()`: both files are written to
    temporaries, fsynced, then renamed (a stale `.idx` is removed first, so a crash between
    the renames leaves a lone `.bin`, never a mismatched pair). Use as a context manager:
    an exception inside the block discards the temporaries.
    """

    def __init__(self, prefix: str | os.PathLike[str], dtype: np.dtype | type) -> None:
        self._prefix = os.fspath(prefix)
        self._dtype = np.dtype(dtype)
        dtype_code(self._dtype)  # reject dtypes the format cannot name
        Path(self._prefix).parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp_bin = Path(f"{data_path(self._prefix)}{tag}")
        self._tmp_idx = Path(f"{index_path(self._prefix)}{tag}")
        self._bin = open(self._tmp_bin, "wb", buffering=1 << 20)  # noqa: SIM115
        self._sizes = array("i")
        self._doc_idx = array("q", [0])
        self._done = False
        if self._dtype.kind in "iu":
            info = np.iinfo(self._dtype)
            self._lo, self._hi = int(info.min), int(info.max)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def num_items(self) -> int:
        return len(self._sizes)

    @property
    def num_docs(self) -> int:
        return len(self._doc_idx) - 1

    def _as_dtype(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError(f"an item must be a 1-D token array, got shape {arr.shape}")
        if arr.dtype == self._dtype:
            return arr
        if arr.size and self._dtype.kind in "iu":
            if arr.dtype.kind not in "iub":
                raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
            lo, hi = int(arr.min()), int(arr.max())
            if lo < self._lo or hi > self._hi:
                raise ValueError(
                    f"token values [{lo}, {hi}] do not fit the dataset dtype {self._dtype}"
                )
        return arr.astype(self._dtype)

    def add_item(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Append one item to the open document."""
        self._check_open()
        arr = self._as_dtype(tokens)
        self._bin.write(arr.astype(self._dtype.newbyteorder("<"), copy=False).tobytes())
        self._sizes.append(arr.size)

    def end_document(self) -> None:
        """Close the open document (its items are those added since the last call)."""
        self._check_open()
        self._doc_idx.append(len(self._sizes))

    def add_document(self, tokens: Sequence[int] | np.ndarray) -> None:
        """One item that is a whole document: what tokenization writes."""
        self.add_item(tokens)
        self.end_document()

    def add_documents(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Many one-item documents at once: `flat` holds them back to back."""
        self._check_open()
        flat = self._as_dtype(flat)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != flat.size:
            raise ValueError(f"lengths add up to {int(lengths.sum())}, flat has {flat.size}")
        self._bin.write(flat.astype(self._dtype.newbyteorder("<"), copy=False).tobytes())
        start = len(self._sizes)
        self._sizes.extend(lengths.astype(np.int32).tolist())
        self._doc_idx.extend(range(start + 1, start + 1 + len(lengths)))

    def append_dataset(self, other: MMapIndexedDataset) -> None:
        """Copy all of `other` after what is written, keeping its document boundaries."""
        self._check_open()
        if self._doc_idx[-1] != len(self._sizes):
            raise ValueError("finish the open document before appending a dataset")
        if other.dtype != self._dtype:
            raise IndexedDatasetError(
                f"{other.prefix}: dtype {other.dtype} differs from the output's {self._dtype}"
            )
        base = len(self._sizes)
        item = self._dtype.itemsize
        sizes = other.sizes.astype(np.int64)
        contiguous = len(sizes) == 0 or (
            int(other.pointers[0]) == 0
            and np.array_equal(other.pointers[1:], np.cumsum(sizes[:-1] * item))
        )
        if contiguous:
            total = int(sizes.sum()) * item
            with open(data_path(other.prefix), "rb") as src:
                remaining = total
                while remaining:
                    chunk = src.read(min(remaining, 8 << 20))
                    if not chunk:
                        raise IndexedDatasetError(f"{data_path(other.prefix)}: truncated")
                    self._bin.write(chunk)
                    remaining -= len(chunk)
        else:
            for i in range(len(other)):
                self._bin.write(other.get(i).tobytes())
        self._sizes.extend(other.sizes.tolist())
        self._doc_idx.extend((other.doc_idx[1:] + base).tolist())

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"writer for {self._prefix} is already finalized or aborted")

    def finalize(self) -> None:
        """Write the index, fsync both files and move them under their final names.

        Any failure (a full disk at fsync, say) discards the temporaries and closes the
        data file before the error propagates, so nothing half-written is left behind.
        """
        self._check_open()
        try:
            self._write_index_and_rename()
        except BaseException:
            self.abort()
            raise

    def _write_index_and_rename(self) -> None:
        if self._doc_idx[-1] != len(self._sizes):
            self._doc_idx.append(len(self._sizes))  # close a trailing open document
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        sizes = np.frombuffer(self._sizes, dtype=np.int32) if self._sizes else np.zeros(0, "<i4")
        pointers = np.zeros(len(sizes), dtype="<i8")
        if len(sizes) > 1:
            np.cumsum(sizes[:-1].astype(np.int64) * self._dtype.itemsize, out=pointers[1:])
        doc_idx = np.frombuffer(self._doc_idx, dtype=np.int64)
        with open(self._tmp_idx, "wb") as fh:
            fh.write(
                _HEADER.pack(
                    MAGIC, FORMAT_VERSION, dtype_code(self._dtype), len(sizes), len(doc_idx)
                )
            )
            fh.write(sizes.astype("<i4", copy=False).tobytes())
            fh.write(pointers.tobytes())
            fh.write(doc_idx.astype("<i8", copy=False).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        final_idx = index_path(self._prefix)
        final_idx.unlink(missing_ok=True)
        os.replace(self._tmp_bin, data_path(self._prefix))
        os.replace(self._tmp_idx, final_idx)
        _fsync_dir(final_idx.parent)
        self._done = True

    def abort(self) -> None:
        """Discard everything written; the final names are left untouched."""
        if self._done:
            return
        self._done = True
        self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)
        self._tmp_idx.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if not self._done:
                self.finalize()
        else:
            self.abort()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_dataset(
    prefix: str | os.PathLike[str],
    documents: Iterable[Sequence[int] | np.ndarray],
    dtype: np.dtype | type,
) -> None:
    """Write one item per document (a convenience for small data and tests)."""
    with IndexedDatasetWriter(prefix, dtype) as w:
        for doc in documents:
            w.add_document(doc)


def merge_datasets(
    prefixes: Sequence[str | os.PathLike[str]], output_prefix: str | os.PathLike[str]
) -> None:
    """Concatenate datasets of one dtype into `output_prefix`, keeping every document boundary."""
    if not prefixes:
        raise ValueError("nothing to merge: no input prefixes")
    readers = [MMapIndexedDataset(p) for p in prefixes]
    dtypes = {str(r.dtype) for r in readers}
    if len(dtypes) > 1:
        detail = ", ".join(f"{r.prefix}: {r.dtype}" for r in readers)
        raise IndexedDatasetError(f"cannot merge datasets of different dtypes ({detail})")
    out = os.path.abspath(os.fspath(output_prefix))
    if any(os.path.abspath(r.prefix) == out for r in readers):
        raise ValueError(f"output prefix {output_prefix} is also an input")
    with IndexedDatasetWriter(output_prefix, readers[0].dtype) as w:
        for r in readers:
            w.append_dataset(r)
    for r in readers:
        r.close()
