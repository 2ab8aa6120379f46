"""The packed index (doc_idx, sample_idx, shuffle_idx) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels_reference import (
    doc_idx_neox,
    num_epochs_loop,
    packed_neox,
    sample_idx_loop,
    sample_idx_vectorised,
    shuffle_idx_neox,
)

from neox_kernels import _index, index

corpora = st.lists(st.integers(0, 60), min_size=1, max_size=40).filter(lambda s: sum(s) > 0)


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=150, deadline=None)
@given(
    sizes=corpora,
    seq_length=st.integers(1, 80),
    num_samples=st.integers(0, 120),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_packed_index_matches_gpt_neox(sizes, seq_length, num_samples, seed, data) -> None:
    sizes = np.array(sizes, dtype=np.int32)
    # A split: a subset of the corpus' document ids, in order, that still holds tokens.
    chosen = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    documents = np.flatnonzero(chosen).astype(np.int32)
    if documents.size == 0 or sizes[documents].sum() == 0:
        documents = np.arange(len(sizes), dtype=np.int32)
    maps = index.build_packed_index(documents, sizes, num_samples, seq_length, seed)
    doc_idx, sample_idx, shuffle_idx = packed_neox(documents, sizes, num_samples, seq_length, seed)
    _assert_same(maps.doc_idx, doc_idx)
    _assert_same(maps.sample_idx, sample_idx)
    _assert_same(maps.shuffle_idx, shuffle_idx)
    assert maps.sample_idx.shape[0] - 1 >= num_samples
    assert len(maps) == max(0, maps.sample_idx.shape[0] - 2)


@settings(max_examples=150, deadline=None)
@given(
    sizes=corpora,
    epochs=st.integers(1, 4),
    seq_length=st.integers(1, 100),
    seed=st.integers(0, 1000),
    use_int64=st.booleans(),
    wide_ids=st.booleans(),
)
def test_sample_idx_matches_both_references(sizes, epochs, seq_length, seed, use_int64, wide_ids):
    sizes = np.array(sizes, dtype=np.int32)
    doc_idx = np.tile(np.arange(len(sizes), dtype=np.int64 if wide_ids else np.int32), epochs)
    np.random.RandomState(seed).shuffle(doc_idx)
    tokens = int(sizes.sum())
    loop = sample_idx_loop(sizes, doc_idx, seq_length, epochs, tokens)
    np.testing.assert_array_equal(
        sample_idx_vectorised(sizes, doc_idx, seq_length, epochs, tokens), loop
    )
    built = _index.build_sample_idx(sizes, doc_idx, seq_length, epochs, tokens, use_int64)
    assert built.dtype == (np.int64 if use_int64 else np.int32)
    np.testing.assert_array_equal(built, loop)


def test_every_packed_sample_is_seq_length_plus_one_tokens() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(0, 300, size=2000).astype(np.int32)
    maps = index.build_packed_index(np.arange(2000), sizes, 3000, 128, seed=7)
    ends = np.cumsum(sizes[maps.doc_idx], dtype=np.int64)
    starts = ends - sizes[maps.doc_idx]
    token = starts[maps.sample_idx[:, 0]] + maps.sample_idx[:, 1]
    np.testing.assert_array_equal(np.diff(token), 128)


def test_empty_documents_including_the_first() -> None:
    sizes = np.array([0, 0, 5, 0, 3, 0, 0, 9, 0], dtype=np.int32)
    doc_idx = np.arange(9, dtype=np.int32)
    built = index.build_sample_idx(sizes, doc_idx, 3, 1, 17)
    np.testing.assert_array_equal(built, sample_idx_loop(sizes, doc_idx, 3, 1, 17))
    assert built[0].tolist() == [0, 0]  # row 0 stays (0, 0) even though doc 0 is empty
    assert built[1].tolist() == [2, 3]


def test_one_huge_document_near_int32_limits() -> None:
    big = np.iinfo(np.int32).max
    sizes = np.array([big, 1, big], dtype=np.int32)
    doc_idx = np.array([0, 1, 2], dtype=np.int32)
    tokens = 2 * big + 1
    seq_length = 2**29 + 3
    built = index.build_sample_idx(sizes, doc_idx, seq_length, 1, tokens)
    np.testing.assert_array_equal(built, sample_idx_loop(sizes, doc_idx, seq_length, 1, tokens))
    assert built[:, 1].max() > 2**30


def test_seq_length_longer_than_every_document() -> None:
    sizes = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int32)
    maps = index.build_packed_index(np.arange(8), sizes, 5, 50, seed=1)
    expected = packed_neox(np.arange(8, dtype=np.int32), sizes, 5, 50, 1)
    for got, want in zip((maps.doc_idx, maps.sample_idx, maps.shuffle_idx), expected, strict=True):
        _assert_same(got, want)
    assert maps.num_epochs == 9


def test_tokens_per_epoch_beyond_int32_uses_int64_arithmetic() -> None:
    # 8.6e9 tokens per epoch: any int32 accumulator would wrap.
    sizes = np.full(4, np.iinfo(np.int32).max, dtype=np.int32)
    tokens = index.num_tokens(np.arange(4), sizes)
    assert tokens == 4 * int(np.iinfo(np.int32).max)
    doc_idx = np.tile(np.arange(4, dtype=np.int32), 2)
    built = index.build_sample_idx(sizes, doc_idx, 2**28, 2, tokens)
    assert built.shape[0] - 1 == (2 * tokens - 1) // 2**28
    np.testing.assert_array_equal(built, sample_idx_vectorised(sizes, doc_idx, 2**28, 2, tokens))
    # doc_idx holding one epoch of tokens cannot give two: an error, not a read past its end.
    with pytest.raises(ValueError, match="ran out of tokens"):
        index.build_sample_idx(sizes, doc_idx[:4], 2**28, 2, tokens)


def test_sample_idx_dtype_follows_gpt_neox_and_never_wraps() -> None:
    assert index.sample_idx_dtype(1, 10**9, 2048, 10**6) == np.int32
    # 1T tokens at seq 2048: 488M samples, still int32 in GPT-NeoX...
    assert index.sample_idx_dtype(1, 10**12, 2048, 10**9) == np.int32
    # ...but not once 2 * (samples + 1) reaches int32 max, as GPT-NeoX decides in floats.
    assert index.sample_idx_dtype(1, 2**31, 2, 10**6) == np.int64
    # Positions into a doc_idx longer than int32 max need int64 whatever GPT-NeoX picks.
    assert index.sample_idx_dtype(1, 10**12, 2048, 2**31) == np.int64


@given(tokens=st.integers(1, 10**13), seq=st.integers(1, 10**5), wanted=st.integers(0, 10**6))
def test_num_epochs_closed_form_matches_the_loop(tokens, seq, wanted) -> None:
    if wanted * seq // tokens > 10_000:  # keep the reference loop short
        return
    epochs = index.num_epochs(tokens, seq, wanted)
    assert epochs == num_epochs_loop(tokens, seq, wanted)
    assert index.num_samples(epochs, tokens, seq) >= wanted


@settings(max_examples=50, deadline=None)
@given(
    documents=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=50),
    epochs=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_doc_idx_and_shuffle_idx_draw_like_gpt_neox(documents, epochs, seed) -> None:
    documents = np.array(documents, dtype=np.int64)
    ours_rng, neox_rng = np.random.RandomState(seed), np.random.RandomState(seed)
    _assert_same(
        index.build_doc_idx(documents, epochs, ours_rng), doc_idx_neox(documents, epochs, neox_rng)
    )
    _assert_same(index.build_shuffle_idx(37, ours_rng), shuffle_idx_neox(37, neox_rng))


def test_doc_idx_widens_only_for_ids_beyond_int32() -> None:
    rng = np.random.RandomState(0)
    assert index.build_doc_idx([0, 2**31 - 1], 2, rng).dtype == np.int32
    wide = index.build_doc_idx([0, 2**31], 2, rng)
    assert wide.dtype == np.int64
    assert sorted(wide.tolist()) == [0, 0, 2**31, 2**31]


def test_memory_mapped_inputs_are_read_in_place(tmp_path) -> None:
    sizes = np.random.default_rng(0).integers(1, 100, size=500).astype(np.int32)
    np.save(tmp_path / "sizes.npy", sizes)
    mapped = np.load(tmp_path / "sizes.npy", mmap_mode="r")
    maps = index.build_packed_index(np.arange(500), mapped, 100, 64, seed=5)
    expected = packed_neox(np.arange(500, dtype=np.int32), sizes, 100, 64, 5)
    np.testing.assert_array_equal(maps.sample_idx, expected[1])


def test_index_map_paths_use_gpt_neox_names() -> None:
    paths = index.index_map_paths("data/pile_text_document", "train_0", 1000, 2048, 1234)
    assert paths["sample"] == (
        "data/pile_text_document_train_0_indexmap_1000ns_2048sl_1234s_packedpi_ac_sample_idx.npy"
    )
    unpacked = index.index_map_paths("d", "valid", 5, 8, 0, "unpacked", allow_chopped=False)
    assert unpacked["doc"] == "d_valid_indexmap_5ns_8sl_0s_unpackedpi_doc_idx.npy"


@pytest.mark.slow
def test_large_random_corpus_matches_the_vectorised_reference() -> None:
    rng = np.random.default_rng(11)
    sizes = rng.integers(0, 4000, size=300_000).astype(np.int32)
    maps = index.build_packed_index(np.arange(300_000), sizes, 2_000_000, 1024, seed=9)
    tokens = int(sizes.sum(dtype=np.int64))
    expected = sample_idx_vectorised(sizes, maps.doc_idx, 1024, maps.num_epochs, tokens)
    np.testing.assert_array_equal(maps.sample_idx, expected)
