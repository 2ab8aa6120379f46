"""The .bin/.idx pair against the byte layout in docs/formats/indexed-dataset.md."""

from __future__ import annotations

import errno
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neox_data.indexed_dataset import (
    IndexedDatasetError,
    IndexedDatasetWriter,
    MMapIndexedDataset,
    best_fitting_dtype,
    merge_datasets,
    verify,
    write_dataset,
)


def handmade_pair(prefix: Path, items: list[list[int]], doc_idx: list[int], code: int, fmt: str):
    """Write a pair straight from the documented layout, independent of the library."""
    itemsize = struct.calcsize(fmt)
    sizes = [len(i) for i in items]
    pointers, addr = [], 0
    for n in sizes:
        pointers.append(addr)
        addr += n * itemsize
    idx = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code)
    idx += struct.pack("<QQ", len(items), len(doc_idx))
    idx += struct.pack(f"<{len(sizes)}i", *sizes)
    idx += struct.pack(f"<{len(pointers)}q", *pointers)
    idx += struct.pack(f"<{len(doc_idx)}q", *doc_idx)
    Path(f"{prefix}.idx").write_bytes(idx)
    flat = [t for i in items for t in i]
    Path(f"{prefix}.bin").write_bytes(struct.pack(f"<{len(flat)}{fmt}", *flat))


def test_writer_bytes_match_documented_layout(tmp_path: Path) -> None:
    docs = [[1, 2, 3], [65000], [], [7, 8]]
    write_dataset(tmp_path / "lib", docs, np.uint16)
    handmade_pair(tmp_path / "ref", docs, [0, 1, 2, 3, 4], code=8, fmt="H")
    assert (tmp_path / "lib.idx").read_bytes() == (tmp_path / "ref.idx").read_bytes()
    assert (tmp_path / "lib.bin").read_bytes() == (tmp_path / "ref.bin").read_bytes()
    idx = (tmp_path / "lib.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    assert len(idx) == 9 + 8 + 1 + 8 + 8 + 4 * 4 + 8 * 4 + 8 * 5


def test_int32_labels_with_negative_values(tmp_path: Path) -> None:
    docs = [[-100, -100, 5, 70000]]
    write_dataset(tmp_path / "lab", docs, np.int32)
    handmade_pair(tmp_path / "ref", docs, [0, 1], code=4, fmt="i")
    assert (tmp_path / "lab.idx").read_bytes() == (tmp_path / "ref.idx").read_bytes()
    assert (tmp_path / "lab.bin").read_bytes() == (tmp_path / "ref.bin").read_bytes()
    assert MMapIndexedDataset(tmp_path / "lab").get(0).tolist() == docs[0]


def test_reader_handles_several_items_per_document(tmp_path: Path) -> None:
    # Old Megatron files may hold sentences as items: doc 0 = items 0-1, doc 1 = item 2.
    items = [[10, 11], [12], [13, 14, 15]]
    handmade_pair(tmp_path / "multi", items, [0, 2, 3], code=4, fmt="i")
    ds = MMapIndexedDataset(tmp_path / "multi")
    assert len(ds) == 3 and ds.num_docs == 2 and ds.num_tokens == 6
    assert ds.dtype == np.int32
    assert ds.sizes.tolist() == [2, 1, 3]
    assert ds.pointers.tolist() == [0, 8, 12]
    assert ds.doc_idx.tolist() == [0, 2, 3]
    assert ds.document(0).tolist() == [10, 11, 12]
    assert ds.get(2, offset=1).tolist() == [14, 15]
    assert ds.get(2, offset=1, length=1).tolist() == [14]
    assert [a.tolist() for a in ds[0:2]] == [[10, 11], [12]]
    assert ds[-1].tolist() == [13, 14, 15]
    assert ds.bin_tokens().tolist() == [10, 11, 12, 13, 14, 15]
    assert verify(tmp_path / "multi") == []


def test_reader_is_a_memory_map_and_pickles_by_path(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [[1, 2], [3]], np.uint16)
    ds = MMapIndexedDataset(tmp_path / "d")
    arr = ds.get(0)
    assert not arr.flags.writeable
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 200
    assert clone.get(1).tolist() == [3]


@pytest.mark.parametrize(
    ("vocab", "dtype"),
    [(50277, np.uint16), (65499, np.uint16), (65500, np.int32), (None, np.int32)],
)
def test_dtype_rule(vocab: int | None, dtype: type) -> None:
    assert best_fitting_dtype(vocab) == np.dtype(dtype)


def test_out_of_range_access_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [[1, 2, 3]], np.uint16)
    ds = MMapIndexedDataset(tmp_path / "d")
    with pytest.raises(IndexError):
        ds.get(1)
    with pytest.raises(IndexError):
        ds.get(0, offset=2, length=2)
    with pytest.raises(IndexError):
        ds.document(1)


def test_token_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    with (
        IndexedDatasetWriter(tmp_path / "d", np.uint16) as w,
        pytest.raises(ValueError, match="fit"),
    ):
        w.add_document([1, 70000])


def test_failure_leaves_no_files(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), IndexedDatasetWriter(tmp_path / "d", np.uint16) as w:
        w.add_document([1, 2])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_pair_intact(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [[1, 2]], np.uint16)
    before = (tmp_path / "d.bin").read_bytes(), (tmp_path / "d.idx").read_bytes()
    with pytest.raises(KeyboardInterrupt), IndexedDatasetWriter(tmp_path / "d", np.uint16) as w:
        w.add_document([9, 9, 9])
        raise KeyboardInterrupt
    assert ((tmp_path / "d.bin").read_bytes(), (tmp_path / "d.idx").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]


def _open_paths_under(root: Path) -> list[str]:
    """Files this process holds open below `root` (Linux /proc)."""
    fd_dir = Path("/proc/self/fd")
    held = []
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(root)):
            held.append(target)
    return held


@pytest.mark.parametrize("failing_call", [1, 2], ids=["bin-fsync", "idx-fsync"])
def test_failed_finalize_on_exit_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """A full disk at fsync (injected: no portable way to fill one) must not strand temporaries."""
    write_dataset(tmp_path / "d", [[1, 2]], np.uint16)
    before = (tmp_path / "d.bin").read_bytes(), (tmp_path / "d.idx").read_bytes()
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = IndexedDatasetWriter(tmp_path / "d", np.uint16)
    with pytest.raises(OSError, match="No space left"), writer as w:
        w.add_document([9, 9, 9])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]
    assert ((tmp_path / "d.bin").read_bytes(), (tmp_path / "d.idx").read_bytes()) == before
    if Path("/proc/self/fd").is_dir():
        assert _open_paths_under(tmp_path) == []
    with pytest.raises(ValueError, match="already finalized or aborted"):
        w.add_document([1])


def test_truncated_files_are_reported(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [[1, 2, 3], [4]], np.uint16)
    idx = (tmp_path / "d.idx").read_bytes()
    (tmp_path / "d.idx").write_bytes(idx[:-3])
    with pytest.raises(IndexedDatasetError, match="truncated"):
        MMapIndexedDataset(tmp_path / "d")
    (tmp_path / "d.idx").write_bytes(idx)
    (tmp_path / "d.bin").write_bytes((tmp_path / "d.bin").read_bytes()[:-2])
    with pytest.raises(IndexedDatasetError, match="truncated"):
        MMapIndexedDataset(tmp_path / "d")
    (tmp_path / "d.idx").write_bytes(b"NOTANIDX\x00" + idx[9:])
    with pytest.raises(IndexedDatasetError, match="magic"):
        MMapIndexedDataset(tmp_path / "d")
    with pytest.raises(IndexedDatasetError, match="not found"):
        MMapIndexedDataset(tmp_path / "nothing")


def test_verify_finds_inconsistent_doc_idx(tmp_path: Path) -> None:
    handmade_pair(tmp_path / "bad", [[1], [2]], [0, 1], code=4, fmt="i")
    assert any("doc_idx ends" in p for p in verify(tmp_path / "bad"))
    write_dataset(tmp_path / "ok", [[1, 5]], np.uint16)
    assert any("outside the vocabulary" in p for p in verify(tmp_path / "ok", vocab_size=5))


def test_empty_dataset_round_trips(tmp_path: Path) -> None:
    write_dataset(tmp_path / "e", [], np.uint16)
    ds = MMapIndexedDataset(tmp_path / "e")
    assert len(ds) == 0 and ds.num_docs == 0 and ds.doc_idx.tolist() == [0]
    assert verify(tmp_path / "e") == []


def test_merge_keeps_document_boundaries(tmp_path: Path) -> None:
    handmade_pair(tmp_path / "a", [[1, 2], [3], [4]], [0, 2, 3], code=4, fmt="i")
    write_dataset(tmp_path / "b", [[5], [6, 7]], np.int32)
    merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    m = MMapIndexedDataset(tmp_path / "m")
    assert m.doc_idx.tolist() == [0, 2, 3, 4, 5]
    assert [m.document(i).tolist() for i in range(m.num_docs)] == [[1, 2, 3], [4], [5], [6, 7]]
    assert verify(tmp_path / "m") == []


def test_merge_refuses_mixed_dtypes(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", [[1]], np.int32)
    write_dataset(tmp_path / "b", [[1]], np.uint16)
    with pytest.raises(IndexedDatasetError, match="different dtypes"):
        merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert not (tmp_path / "m.idx").exists()


def test_bulk_add_equals_one_by_one(tmp_path: Path) -> None:
    docs = [[1, 2, 3], [4], [5, 6]]
    write_dataset(tmp_path / "one", docs, np.uint16)
    with IndexedDatasetWriter(tmp_path / "bulk", np.uint16) as w:
        w.add_documents(np.array([1, 2, 3, 4], np.uint16), np.array([3, 1]))
        w.add_documents(np.array([5, 6], np.int64), np.array([2]))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"one.{ext}").read_bytes() == (tmp_path / f"bulk.{ext}").read_bytes()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 65535), max_size=20), max_size=15))
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, docs: list[list[int]]) -> None:
    prefix = tmp_path_factory.mktemp("rt") / "d"
    write_dataset(prefix, docs, np.uint16)
    ds = MMapIndexedDataset(prefix)
    assert [ds.document(i).tolist() for i in range(ds.num_docs)] == docs
    assert ds.num_tokens == sum(map(len, docs))
    assert verify(prefix) == []


def test_legacy_tntidx_is_read_and_converted(tmp_path: Path) -> None:
    """The older TNTIDX index (fairseq IndexedDataset), built from its documented layout."""
    items = [[5, 6, 7], [8], [9, 10]]
    n, dims = len(items), [len(i) for i in items]
    data_offsets = [0, 3, 4, 6]
    idx = b"TNTIDX\x00\x00" + struct.pack("<QQQQQQ", 1, 4, 4, n, n, 3)
    idx += struct.pack(f"<{n + 1}q", *range(n + 1))  # dim_offsets
    idx += struct.pack(f"<{n + 1}q", *data_offsets)  # in elements
    idx += struct.pack(f"<{n}q", *dims)
    idx += struct.pack("<3q", 0, 2, 3)  # doc 0 = items 0-1, doc 1 = item 2
    (tmp_path / "old.idx").write_bytes(idx)
    (tmp_path / "old.bin").write_bytes(struct.pack("<6i", 5, 6, 7, 8, 9, 10))
    ds = MMapIndexedDataset(tmp_path / "old")
    assert ds.is_legacy and ds.dtype == np.int32
    assert [ds.document(d).tolist() for d in range(ds.num_docs)] == [[5, 6, 7, 8], [9, 10]]
    assert ds.get(2, offset=1).tolist() == [10]
    merge_datasets([tmp_path / "old"], tmp_path / "new")
    new = MMapIndexedDataset(tmp_path / "new")
    assert not new.is_legacy and new.doc_idx.tolist() == [0, 2, 3]
    assert new.bin_tokens().tolist() == [5, 6, 7, 8, 9, 10]
    assert verify(tmp_path / "new") == []
