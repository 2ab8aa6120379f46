"""The blending index against GPT-NeoX's greedy loop, and the weight helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels_reference import (
    blending_loop,
    normalized_weights_and_num_samples_neox,
    weights_by_num_docs_neox,
)

from neox_kernels import index

weight_lists = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-6, 100.0, allow_nan=False)), min_size=1, max_size=8
).filter(lambda w: sum(w) > 0)


@settings(max_examples=150, deadline=None)
@given(weights=weight_lists, size=st.integers(0, 400))
def test_blending_matches_gpt_neox(weights, size) -> None:
    blend = index.build_blending_indices(weights, size)
    dataset_index, dataset_sample_index = blending_loop(weights, size)
    assert blend.dataset_index.dtype == np.uint8
    assert blend.dataset_sample_index.dtype == np.int64
    np.testing.assert_array_equal(blend.dataset_index, dataset_index)
    np.testing.assert_array_equal(blend.dataset_sample_index, dataset_sample_index)
    np.testing.assert_array_equal(
        blend.samples_per_dataset, np.bincount(dataset_index, minlength=len(weights))
    )


def test_single_dataset_takes_every_sample() -> None:
    blend = index.build_blending_indices([3.0], 1000)
    assert not blend.dataset_index.any()
    np.testing.assert_array_equal(blend.dataset_sample_index, np.arange(1000))


def test_zero_weight_dataset_keeps_gpt_neox_tie_quirk() -> None:
    # At sample 1 both errors are 0 and the first dataset wins, weight 0 or not.
    blend = index.build_blending_indices([0.0, 1.0], 6)
    assert blend.dataset_index.tolist() == [1, 0, 1, 1, 1, 1]
    assert blend.samples_per_dataset.tolist() == [1, 5]
    blend = index.build_blending_indices([1.0, 0.0, 2.0], 3000)
    assert blend.samples_per_dataset[1] == 0


def test_blend_follows_the_weights() -> None:
    weights = [0.89, 0.11]
    blend = index.build_blending_indices(weights, 100_000)
    assert np.abs(blend.samples_per_dataset - np.array(weights) * 100_000).max() <= 1


def test_unnormalised_weights_give_the_normalised_blend() -> None:
    a = index.build_blending_indices([2, 6, 2], 500)
    b = index.build_blending_indices(np.array([0.2, 0.6, 0.2]), 500)
    np.testing.assert_array_equal(a.dataset_index, b.dataset_index)


@given(weights=weight_lists, num_samples=st.integers(0, 10**9))
def test_normalized_weights_and_num_samples(weights, num_samples) -> None:
    assert index.normalized_weights_and_num_samples(
        weights, num_samples
    ) == normalized_weights_and_num_samples_neox(weights, num_samples)


def test_weights_by_num_docs() -> None:
    counts = [1000, 50, 200_000]
    assert index.weights_by_num_docs(counts, 0.3) == weights_by_num_docs_neox(counts, 0.3)
    assert index.weights_by_num_docs(counts, 0.5, limit=500) == weights_by_num_docs_neox(
        counts, 0.5, limit=500
    )
    # alpha < 1 lifts the small dataset above its share of documents
    assert index.weights_by_num_docs(counts, 0.3)[1] > 50 / sum(counts)


@pytest.mark.parametrize("limit", [None, 10])
def test_weights_by_num_docs_of_one_dataset_is_one(limit: int | None) -> None:
    """neox-core weighs each split on its own; a split with one dataset must not fail."""
    assert index.weights_by_num_docs([1000], 0.3, limit=limit) == [1.0]
    assert weights_by_num_docs_neox([1000], 0.3, limit=limit) == [1.0]


def test_weights_by_num_docs_refuses_no_documents_at_all() -> None:
    with pytest.raises(ValueError, match="positive count"):
        index.weights_by_num_docs([0, 0])
    with pytest.raises(ValueError):
        index.weights_by_num_docs([])


@pytest.mark.parametrize("num_datasets", [9, 13, 40])
def test_blends_of_many_datasets_match_gpt_neox(num_datasets) -> None:
    # Past eight datasets the C++ takes its general path; check it as closely.
    rng = np.random.default_rng(num_datasets)
    weights = rng.random(num_datasets) * (rng.random(num_datasets) > 0.2)
    blend = index.build_blending_indices(weights, 3000)
    dataset_index, dataset_sample_index = blending_loop(weights, 3000)
    np.testing.assert_array_equal(blend.dataset_index, dataset_index)
    np.testing.assert_array_equal(blend.dataset_sample_index, dataset_sample_index)
