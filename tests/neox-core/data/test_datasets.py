"""GPT-NeoX dataset behaviour over neox-data files: packed samples, splits, blending, labels,
pack_until_overflow / unpacked, the `.npy` cache and resumable loading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from neox_core.config import DataConfig
from neox_core.data import (
    ResumableBatchSampler,
    build_datasets,
    make_loader,
    num_samples_per_split,
    split_boundaries,
)
from neox_core.data.checks import DataCheckError
from neox_data.indexed_dataset import write_dataset

SEQ = 16


def _docs(n: int, seed: int, lo: int = 3, hi: int = 40, base: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (base + rng.integers(1, 500, size=int(rng.integers(lo, hi)))).astype(np.uint16)
        for _ in range(n)
    ]


def _write(tmp_path: Path, name: str, docs: list[np.ndarray], dtype: type = np.uint16) -> str:
    prefix = str(tmp_path / name)
    write_dataset(prefix, docs, dtype)
    return prefix


def _packed_oracle(docs, documents, num_samples, seed):
    """GPT-NeoX packed sampling written plainly: shuffle epochs of docs, cut the stream."""
    tokens_per_epoch = sum(len(docs[d]) for d in documents)
    epochs = 1
    while (epochs * tokens_per_epoch - 1) // SEQ < num_samples:
        epochs += 1
    rng = np.random.RandomState(seed)
    doc_idx = np.tile(np.asarray(documents, dtype=np.int32), epochs)
    rng.shuffle(doc_idx)
    stream = np.concatenate([docs[d] for d in doc_idx]).astype(np.int64)
    n = (len(stream) - 1) // SEQ
    shuffle = np.arange(n, dtype=np.uint32)
    rng.shuffle(shuffle)
    return [stream[k * SEQ : k * SEQ + SEQ + 1] for k in shuffle[: n - 1]]


def test_split_boundaries_match_gpt_neox_arithmetic() -> None:
    assert split_boundaries("969, 30, 1", 1000) == [0, 969, 999, 1000]
    assert split_boundaries("1,1,1", 10) == [0, 4, 7, 10]
    assert split_boundaries("100", 7) == [0, 7, 7, 7]
    assert split_boundaries("8/2", 10) == [0, 8, 10, 10]
    with pytest.raises(ValueError, match="split"):
        split_boundaries("a,b", 10)
    assert num_samples_per_split(100, 10, 2, 8) == (800, 176, 16)


def test_packed_split_samples_equal_the_plain_gpt_neox_construction(tmp_path: Path) -> None:
    docs = _docs(60, seed=1)
    prefix = _write(tmp_path, "corpus_text_document", docs)
    cfg = DataConfig(data_path=prefix, split="80,20,0", seq_length=SEQ)
    ds = build_datasets(
        cfg, train_iters=10, eval_interval=5, eval_iters=2, train_batch_size=4, seed=7, log=str
    )
    assert ds.test is None
    for split, documents, wanted in (
        (ds.train, range(0, 48), 40),
        (ds.valid, range(48, 60), 24),
    ):
        expected = _packed_oracle(docs, list(documents), wanted, 7)
        assert len(split) == len(expected) >= wanted
        for j in range(len(split)):
            sample = split[j]
            assert sample["text"].dtype == np.int64 and sample["text"].shape == (SEQ + 1,)
            np.testing.assert_array_equal(sample["text"], expected[j])


def test_index_cache_is_named_as_gpt_neox_and_reused(tmp_path: Path) -> None:
    prefix = _write(tmp_path, "c_text_document", _docs(30, seed=2))
    cfg = DataConfig(data_path=prefix, split="100,0,0", seq_length=SEQ)
    kw = dict(train_iters=5, eval_interval=100, eval_iters=1, train_batch_size=2, seed=3)
    first = build_datasets(cfg, **kw, log=str).train
    names = sorted(p.name for p in tmp_path.glob("*.npy"))
    stem = "c_text_document_train_indexmap_10ns_16sl_3s_packedpi_ac"
    assert names == [f"{stem}_{k}_idx.npy" for k in ("doc", "sample", "shuffle")]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")}
    # a non-building rank only loads; the arrays come back memory-mapped
    again = build_datasets(cfg, **kw, build=False, log=str).train
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")} == mtimes
    assert isinstance(again.maps.shuffle_idx, np.memmap)
    for j in range(len(first)):
        np.testing.assert_array_equal(first[j]["text"], again[j]["text"])
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_blending_weights_and_labels(tmp_path: Path) -> None:
    a_docs, b_docs = _docs(40, seed=3), _docs(40, seed=4, base=1000)
    a = _write(tmp_path, "a", a_docs)
    b = _write(tmp_path, "b", b_docs)
    a_labels = [np.where(np.arange(len(d)) % 2 == 0, d.astype(np.int32), -100) for d in a_docs]
    la = _write(tmp_path, "a_label", a_labels, dtype=np.int32)
    lb = _write(tmp_path, "b_label", [d.astype(np.int32) for d in b_docs], dtype=np.int32)
    cfg = DataConfig(
        train_data_paths=[a, b],
        train_data_weights=[3.0, 1.0],
        label_data_paths=[la, lb],
        valid_data_paths=[b],
        valid_data_weights=[1.0],
        seq_length=SEQ,
    )
    ds = build_datasets(
        cfg, train_iters=20, eval_interval=10, eval_iters=1, train_batch_size=4, seed=1, log=str
    )
    train = ds.train
    assert train is not None and ds.valid is not None and ds.test is None
    # each dataset was built for ceil(w * 80 * 1.005) samples: 61 and 21
    assert (tmp_path / "a_train_0_indexmap_61ns_16sl_1s_packedpi_ac_doc_idx.npy").is_file()
    assert (tmp_path / "b_train_1_indexmap_21ns_16sl_1s_packedpi_ac_doc_idx.npy").is_file()
    picks = np.asarray(train.dataset_index[:80])
    assert abs(int((picks == 0).sum()) - 60) <= 1
    for i in range(20):
        s = train[i]
        assert set(s) == {"text", "label"}
        from_b = train.dataset_index[i] == 1
        assert (s["text"] >= 1000).all() == bool(from_b)
        if from_b:
            np.testing.assert_array_equal(s["label"], s["text"])
    assert "label" not in ds.valid[0]


@pytest.mark.parametrize("pack_impl", ["pack_until_overflow", "unpacked"])
def test_document_packing_modes(tmp_path: Path, pack_impl: str) -> None:
    docs = [*_docs(30, seed=5, lo=3, hi=12), np.arange(1, 40, dtype=np.uint16)]  # one too long
    prefix = _write(tmp_path, "d", docs)
    starts = {tuple(d[:3]) for d in docs}
    cfg = DataConfig(train_data_paths=[prefix], seq_length=SEQ, pack_impl=pack_impl)
    ds = build_datasets(
        cfg, train_iters=10, eval_interval=100, eval_iters=1, train_batch_size=2, seed=0, log=str
    ).train
    assert ds is not None
    for j in range(len(ds)):
        text = ds[j]["text"]
        assert text.shape == (SEQ + 1,)
        assert tuple(text[:3]) in starts  # every sample starts at a document start
        real = text[text != -100]
        assert (text[len(real) :] == -100).all()  # padding at the end only
        if pack_impl == "unpacked":
            doc = next(d for d in docs if tuple(d[:3]) == tuple(text[:3]))
            n = min(len(doc), SEQ + 1)
            np.testing.assert_array_equal(real[:n], doc[:n])


def test_bad_paths_name_the_key(tmp_path: Path) -> None:
    cfg = DataConfig(train_data_paths=[str(tmp_path / "nope")], seq_length=SEQ)
    # checked before any index is built (data/checks.py): a one-line error, exit 2 in neox-train
    with pytest.raises(DataCheckError, match=r"train_data_paths: .*nope\.idx: file not found"):
        build_datasets(
            cfg, train_iters=1, eval_interval=1, eval_iters=1, train_batch_size=1, seed=0, log=str
        )


def test_sampler_resumes_at_the_sample_and_splits_ranks() -> None:
    full = ResumableBatchSampler(10, 2)
    it = iter(full)
    first = [next(it) for _ in range(7)]
    assert first[:5] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]] and first[5] == [0, 1]
    resumed = iter(ResumableBatchSampler(10, 2, start=6))
    assert [next(resumed) for _ in range(3)] == first[3:6]
    r1 = iter(ResumableBatchSampler(11, 2, dp_rank=1, dp_size=2))
    assert [next(r1) for _ in range(3)] == [[2, 3], [6, 7], [2, 3]]


def test_loader_with_workers_yields_the_same_batches(tmp_path: Path) -> None:
    prefix = _write(tmp_path, "w", _docs(40, seed=6))
    cfg = DataConfig(data_path=prefix, split="1", seq_length=SEQ)
    ds = build_datasets(
        cfg, train_iters=8, eval_interval=100, eval_iters=1, train_batch_size=2, seed=0, log=str
    ).train
    plain = make_loader(ds, micro_batch_size=2, start_sample=4)
    workers = make_loader(ds, micro_batch_size=2, start_sample=4, num_workers=2)
    for _ in range(4):
        a, b = next(plain), next(workers)
        assert a["text"].dtype == torch.int64 and a["text"].shape == (2, SEQ + 1)
        assert torch.equal(a["text"], b["text"])
    assert os.getpid()  # workers were real processes; nothing leaked into this one


def test_weight_by_num_documents_reweights_before_sizing(tmp_path: Path) -> None:
    big = _write(tmp_path, "big", _docs(90, seed=8))
    small = _write(tmp_path, "small", _docs(10, seed=9))
    cfg = DataConfig(
        train_data_paths=[big, small],
        train_data_weights=[1.0, 1.0],
        weight_by_num_documents=True,
        weighted_sampler_alpha=0.3,
        seq_length=SEQ,
    )
    ds = build_datasets(
        cfg, train_iters=25, eval_interval=100, eval_iters=1, train_batch_size=4, seed=0, log=str
    ).train
    assert ds is not None
    # GPT-NeoX's weights_by_num_docs([90, 10], alpha 0.3): p = share**0.3 normalised, times
    # (1 - share), normalised -> [0.1768, 0.8232]; x 100 samples x 1.005, rounded up
    names = {p.name.split("_indexmap_")[1].split("_")[0] for p in tmp_path.glob("*doc_idx.npy")}
    assert names == {"18ns", "83ns"}
    picks = np.asarray(ds.dataset_index[:100])
    assert 81 <= int((picks == 1).sum()) <= 83


def test_pickled_dataset_remaps_the_cache_instead_of_copying_it(tmp_path: Path) -> None:
    import pickle

    prefix = _write(tmp_path, "p", _docs(40, seed=10))
    cfg = DataConfig(data_path=prefix, split="1", seq_length=SEQ)
    ds = build_datasets(
        cfg, train_iters=50, eval_interval=100, eval_iters=1, train_batch_size=4, seed=0, log=str
    ).train
    blob = pickle.dumps(ds)
    assert len(blob) < 2000  # file names, not the arrays
    again = pickle.loads(blob)
    assert isinstance(again.maps.sample_idx, np.memmap)
    for j in (0, 7, len(ds) - 1):
        np.testing.assert_array_equal(again[j]["text"], ds[j]["text"])
    spawned = make_loader(ds, micro_batch_size=2, num_workers=1, multiprocessing_context="spawn")
    assert torch.equal(
        next(spawned)["text"], torch.as_tensor(np.stack([ds[0]["text"], ds[1]["text"]]))
    )


def test_spawned_loader_workers_survive_the_checkpoint_signal(tmp_path: Path) -> None:
    """SLURM sends SIGUSR1 to every process of the step; a worker must not die of it."""
    import multiprocessing
    import signal

    prefix = _write(tmp_path, "s", _docs(40, seed=11))
    cfg = DataConfig(data_path=prefix, split="1", seq_length=SEQ)
    ds = build_datasets(
        cfg, train_iters=50, eval_interval=100, eval_iters=1, train_batch_size=4, seed=0, log=str
    ).train
    loader = make_loader(ds, micro_batch_size=2, num_workers=1, multiprocessing_context="spawn")
    next(loader)  # the worker is up and has run its init function
    workers = multiprocessing.active_children()
    assert workers
    for w in workers:
        os.kill(w.pid, signal.SIGUSR1)
    for w in workers:
        w.join(timeout=1.0)  # returns at once if the signal killed it
        assert w.is_alive(), f"loader worker died of SIGUSR1 (exit code {w.exitcode})"
    for _ in range(3):
        assert next(loader)["text"].shape == (2, SEQ + 1)
