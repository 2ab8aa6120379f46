"""pack_until_overflow and unpacked indices against GPT-NeoX's loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels_reference import pack_until_overflow_neox, unpacked_neox

from neox_kernels import index

REFERENCES = {
    "pack_until_overflow": pack_until_overflow_neox,
    "unpacked": unpacked_neox,
}


def _compare(pack_impl, documents, sizes, num_samples, seq_length, seed, allow_chopped, skip):
    maps = index.build_index_maps(
        pack_impl, documents, sizes, num_samples, seq_length, seed, allow_chopped, skip
    )
    expected = REFERENCES[pack_impl](
        documents, sizes, num_samples, seq_length, seed, allow_chopped, skip
    )
    for got, want in zip((maps.doc_idx, maps.sample_idx, maps.shuffle_idx), expected, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    return maps


@settings(max_examples=150, deadline=None)
@given(
    pack_impl=st.sampled_from(sorted(REFERENCES)),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=30),
    seq_length=st.integers(1, 40),
    num_samples=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
    allow_chopped=st.booleans(),
    data=st.data(),
)
def test_unpadded_variants_match_gpt_neox(
    pack_impl, sizes, seq_length, num_samples, seed, allow_chopped, data
) -> None:
    sizes = np.array(sizes, dtype=np.int32)
    n = len(sizes)
    skip = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if data.draw(st.booleans()):
        skip = None
    # A split of the corpus: starting past 0 checks ids are taken from `documents`.
    start = data.draw(st.integers(0, n - 1))
    documents = np.arange(start, n, dtype=np.int32)
    usable = [
        (allow_chopped or sizes[d] <= seq_length + 1) and (skip is None or not skip[d])
        for d in documents
    ]
    # unpacked always places num_samples + 1 documents; pack_until_overflow num_samples.
    needs_documents = num_samples > 0 or pack_impl == "unpacked"
    if needs_documents and not any(usable):
        with pytest.raises(ValueError, match="no document can be"):
            index.build_index_maps(
                pack_impl, documents, sizes, num_samples, seq_length, seed, allow_chopped, skip
            )
        return
    _compare(pack_impl, documents, sizes, num_samples, seq_length, seed, allow_chopped, skip)


def test_pack_until_overflow_fills_samples_with_whole_documents() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 700, size=3000).astype(np.int32)
    maps = _compare("pack_until_overflow", np.arange(3000), sizes, 5000, 1024, 42, False, None)
    tokens = np.add.reduceat(sizes[maps.doc_idx], maps.sample_idx[:-1, 0])
    assert tokens.max() <= 1025
    # Many passes over the documents: the reshuffle between passes matched the reference.
    assert maps.doc_idx.shape[0] > 3 * 3000


def test_pack_until_overflow_chops_or_drops_long_documents() -> None:
    sizes = np.array([5, 50, 3, 60, 2], dtype=np.int32)
    chopped = _compare("pack_until_overflow", np.arange(5), sizes, 30, 9, 3, True, None)
    dropped = _compare("pack_until_overflow", np.arange(5), sizes, 30, 9, 3, False, None)
    assert {1, 3} <= set(chopped.doc_idx.tolist())
    assert not {1, 3} & set(dropped.doc_idx.tolist())


def test_unpacked_is_one_document_per_sample_cycling() -> None:
    sizes = np.array([4, 100, 7, 0, 9], dtype=np.int32)
    skip = np.array([False, False, False, True, False])
    maps = _compare("unpacked", np.arange(5), sizes, 7, 10, 0, False, skip)
    assert maps.doc_idx.tolist() == [0, 2, 4, 0, 2, 4, 0, 2]
    np.testing.assert_array_equal(maps.sample_idx[:, 0], np.arange(8))


def test_unpacked_with_a_rare_usable_document_stays_fast() -> None:
    sizes = np.full(200_000, 5000, dtype=np.int32)
    sizes[123_456] = 10
    maps = index.build_unpacked_index(np.arange(200_000), sizes, 100_000, 2048, 1, False)
    assert set(maps.doc_idx.tolist()) == {123_456}


def test_pack_impl_is_checked() -> None:
    with pytest.raises(ValueError, match="pack_impl must be one of"):
        index.build_index_maps("padded", [0], np.ones(1, np.int32), 1, 4, 0)
