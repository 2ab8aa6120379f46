"""Bad input is a ValueError naming the problem, in the binding and the typed API alike."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neox_kernels import _index, index

SIZES = np.array([5, 3, 8, 0, 4], dtype=np.int32)
DOC_IDX = np.arange(5, dtype=np.int32)
TOKENS = int(SIZES.sum())


@pytest.mark.parametrize(
    ("sizes", "doc_idx", "match"),
    [
        (SIZES.astype(np.int64), DOC_IDX, "sizes must have dtype int32, got int64"),
        (SIZES.astype(np.float32), DOC_IDX, "sizes must have dtype int32"),
        (SIZES.astype(">i4"), DOC_IDX, "sizes must have dtype int32"),
        (SIZES, DOC_IDX.astype(np.float64), "doc_idx must have dtype int32"),
        (SIZES, DOC_IDX.astype(np.uint32), "doc_idx must have dtype int32"),
        (np.repeat(SIZES, 2)[::2], DOC_IDX, "sizes must be C-contiguous"),
        (SIZES, np.repeat(DOC_IDX.astype(np.int64), 2)[::2], "doc_idx must be C-contiguous"),
        (SIZES.reshape(5, 1), DOC_IDX, "sizes must be one-dimensional"),
        (np.array([5, -3, 8, 0, 4], np.int32), DOC_IDX, r"sizes\[1\] = -3 is negative"),
        (SIZES, np.array([0, 1, 7, 3, 4], np.int32), r"doc_idx\[2\] = 7 is not a document id"),
        (SIZES, np.array([0, -1, 2, 3, 4], np.int32), r"doc_idx\[1\] = -1 is not a document id"),
    ],
)
def test_sample_idx_rejects_bad_arrays(sizes, doc_idx, match) -> None:
    with pytest.raises(ValueError, match=match):
        _index.build_sample_idx(sizes, doc_idx, 4, 1, TOKENS, False)
    with pytest.raises(ValueError, match=match):
        index.build_sample_idx(sizes, doc_idx, 4, 1, TOKENS)


@pytest.mark.parametrize(
    ("seq_length", "num_epochs", "tokens", "match"),
    [
        (0, 1, TOKENS, "seq_length must be >= 1"),
        (-4, 1, TOKENS, "seq_length must be >= 1"),
        (4, 0, TOKENS, "num_epochs must be >= 1"),
        (4, 1, 0, "tokens_per_epoch must be >= 1"),
        (4, 1, TOKENS + 1, "ran out of tokens"),
        (4, 2**40, 2**40, "overflows int64"),
        (2**31 - 1, 1, TOKENS, r"seq_length must be < 2\*\*31 - 1"),
    ],
)
def test_sample_idx_rejects_bad_numbers(seq_length, num_epochs, tokens, match) -> None:
    with pytest.raises(ValueError, match=match):
        _index.build_sample_idx(SIZES, DOC_IDX, seq_length, num_epochs, tokens, True)


def test_typed_api_rejects_non_integers() -> None:
    with pytest.raises(ValueError, match="seq_length must be an integer"):
        index.build_sample_idx(SIZES, DOC_IDX, 4.0, 1, TOKENS)
    with pytest.raises(ValueError, match="num_epochs must be an integer"):
        index.build_sample_idx(SIZES, DOC_IDX, 4, True, TOKENS)
    with pytest.raises(ValueError, match="documents must hold integers"):
        index.num_tokens([0.5, 1.0], SIZES)
    with pytest.raises(ValueError, match=r"documents\[1\] = 9 is not a document id"):
        index.num_tokens([0, 9], SIZES)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        index.build_packed_index([0, 1], SIZES, 3, 2, seed=-1)


def test_doc_idx_and_shuffle_need_gpt_neox_generator() -> None:
    with pytest.raises(ValueError, match="RandomState"):
        index.build_doc_idx([0, 1], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="RandomState"):
        index.build_shuffle_idx(3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="documents is empty"):
        index.build_doc_idx([], 1, np.random.RandomState(0))
    with pytest.raises(ValueError, match="negative id"):
        index.build_doc_idx([1, -2], 1, np.random.RandomState(0))


def test_packed_index_of_an_empty_split_is_refused() -> None:
    with pytest.raises(ValueError, match="hold no tokens"):
        index.build_packed_index([3], SIZES, 10, 4, seed=0)


@pytest.mark.parametrize(
    ("weights", "size", "match"),
    [
        ([], 10, "1 to 254"),
        ([1.0] * 255, 10, "1 to 254"),
        ([0.0, 0.0], 10, "sum to a positive number"),
        ([1.0, -0.5], 10, "finite and >= 0"),
        ([1.0, float("nan")], 10, "finite and >= 0"),
        ([1.0, float("inf")], 10, "finite and >= 0"),
        ([1.0], -1, "size must be >= 0"),
    ],
)
def test_blending_rejects_bad_weights(weights, size, match) -> None:
    with pytest.raises(ValueError, match=match):
        index.build_blending_indices(weights, size)
    raw = np.array(weights, dtype=np.float64)
    if raw.size and np.isfinite(raw).all() and (raw >= 0).all() and raw.sum() > 0:
        raw = raw / raw.sum()
    with pytest.raises(ValueError, match=match):
        _index.build_blending_indices(raw, size)


def test_blending_binding_checks_its_array() -> None:
    with pytest.raises(ValueError, match="weights must have dtype float64"):
        _index.build_blending_indices(np.array([1.0], np.float32), 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        _index.build_blending_indices(np.array([0.5, 0.1, 0.5, 0.1])[::2], 3)


def test_unpadded_variants_check_their_arguments() -> None:
    docs = np.arange(5, dtype=np.int32)
    with pytest.raises(ValueError, match="skip must be None or a numpy bool array"):
        index.build_unpacked_index(docs, SIZES, 3, 4, 0, skip=np.zeros(5, np.int8))
    with pytest.raises(ValueError, match="skip is indexed by document id"):
        index.build_unpacked_index(docs, SIZES, 3, 4, 0, skip=np.zeros(4, bool))
    with pytest.raises(ValueError, match="documents is empty"):
        index.build_pack_until_overflow_index([], SIZES, 3, 4, 0)
    with pytest.raises(ValueError, match="no document can be packed"):
        index.build_pack_until_overflow_index([0, 2], SIZES, 3, 2, 0, allow_chopped=False)
    with pytest.raises(ValueError, match="no document can be used"):
        index.build_unpacked_index(docs, SIZES, 3, 4, 0, skip=np.ones(5, bool))
    with pytest.raises(ValueError, match=r"documents\[4\] = 5 is not a document id"):
        index.build_unpacked_index(np.arange(1, 6), SIZES, 3, 4, 0)
    with pytest.raises(ValueError, match="seq_length must be >= 1"):
        index.build_pack_until_overflow_index(docs, SIZES, 3, 0, 0)


def test_pack_until_overflow_binding_checks_the_order() -> None:
    docs = np.arange(5, dtype=np.int32)
    with pytest.raises(ValueError, match="permutation of the 5 positions"):
        _index.build_pack_until_overflow(SIZES, docs, np.arange(4), 4, 3, True, None, print)
    bad = np.array([0, 1, 9, 2, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="order holds position 9"):
        _index.build_pack_until_overflow(SIZES, docs, bad, 4, 5, True, None, print)
    repeated = np.zeros(5, dtype=np.int64)  # position 0 only: documents[0] has 5 tokens
    with pytest.raises(ValueError, match="must be a permutation"):
        _index.build_pack_until_overflow(SIZES, docs, repeated, 2, 5, False, None, print)
    frozen = np.arange(5, dtype=np.int64)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="order must be writeable"):
        _index.build_pack_until_overflow(SIZES, docs, frozen, 4, 3, True, None, print)


def test_an_error_in_the_reshuffle_callback_propagates() -> None:
    docs = np.arange(5, dtype=np.int32)

    def fail() -> None:
        raise RuntimeError("reshuffle failed")

    with pytest.raises(RuntimeError, match="reshuffle failed"):
        _index.build_pack_until_overflow(SIZES, docs, np.arange(5), 4, 50, True, None, fail)


def test_numbers_beyond_int64_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="tokens_per_epoch must fit int64"):
        index.build_sample_idx(SIZES, DOC_IDX, 4, 1, 2**63)
    with pytest.raises(ValueError, match="size must fit int64"):
        index.build_blending_indices([1.0], 2**64)


arrays = st.sampled_from(
    [
        np.array([], np.int32),
        np.array([3, 0, 7], np.int32),
        np.array([3, -1, 7], np.int32),
        np.array([0, 1, 2], np.int64),
        np.array([2, 5, -3], np.int64),
        np.array([1.5, 2.0]),
        np.array([True, False, True]),
        np.zeros((2, 2), np.int32),
        np.arange(6, dtype=np.int32)[::2],
        np.array([0.5, 0.5]),
        np.array([1e308, 1e308]),
    ]
)
numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, 2, 2**31, 2**40]))


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, 4),
    a=arrays,
    b=arrays,
    c=arrays,
    x=numbers,
    y=numbers,
    z=numbers,
    flag=st.booleans(),
)
def test_the_binding_raises_instead_of_crashing(which, a, b, c, x, y, z, flag) -> None:
    # Keep the requested outputs small: a huge allocation is a MemoryError, not a crash,
    # but it would make this test slow.
    x, y, z = (v % 1000 if abs(v) > 1000 else v for v in (x, y, z))
    calls = [
        lambda: _index.build_sample_idx(a, b, x, y, z, flag),
        lambda: _index.build_blending_indices(a, x),
        lambda: _index.build_unpacked(a, b, x, y, flag, c if flag else None),
        lambda: _index.build_pack_until_overflow(
            a, b, c.astype(np.int64) if c.dtype.kind in "iub" else c, x, y, flag, None, lambda: None
        ),
        lambda: _index.sum_document_sizes(a, b),
    ]
    with contextlib.suppress(ValueError, TypeError, MemoryError):
        calls[which]()
