"""Blending several datasets by weight, as GPT-NeoX's BlendableDataset and data_utils do."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from neox_kernels import _index
from neox_kernels._checks import as_int

MAX_DATASETS = 254  # dataset ids are uint8 and GPT-NeoX asserts fewer than 255 datasets


class BlendingIndices(NamedTuple):
    """Which dataset feeds each blended sample, and which of that dataset's samples it is."""

    dataset_index: np.ndarray  # uint8 [size]
    dataset_sample_index: np.ndarray  # int64 [size]
    samples_per_dataset: np.ndarray  # int64 [num_datasets]: how many each dataset must supply


def _weight_array(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.array(weights, dtype=np.float64)
    if array.ndim != 1 or not 1 <= array.size <= MAX_DATASETS:
        raise ValueError(f"weights must be a list of 1 to {MAX_DATASETS} numbers, got {weights!r}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"weights must be finite and >= 0, got {array.tolist()}")
    if not array.sum() > 0:
        raise ValueError(f"weights must sum to a positive number, got {array.tolist()}")
    return array


def build_blending_indices(weights: Sequence[float] | np.ndarray, size: int) -> BlendingIndices:
    """Assign each of `size` samples to a dataset, largest weighted deficit first.

    Weights are normalised as BlendableDataset does (float64, divided by their numpy sum).
    Sample i goes to the dataset whose weight·max(i, 1) − samples_taken is largest, the first
    on ties. GPT-NeoX quirk kept for identical output: a dataset of weight 0 can still win a
    tie at 0 (weights [0, 1] give dataset 0 for sample 1); samples_per_dataset says so.
    GPT-NeoX blends size = the sum of its datasets' lengths (`len(IndexMaps)` of each).
    """
    normalised = _weight_array(weights)
    normalised /= np.sum(normalised)
    count = as_int(size, "size", 0)
    dataset_index, dataset_sample_index, counts = _index.build_blending_indices(normalised, count)
    return BlendingIndices(dataset_index, dataset_sample_index, counts)


def normalized_weights_and_num_samples(
    weights: Sequence[float], num_samples: int
) -> tuple[list[float], list[int]]:
    """Weights over their sum, and the samples to build per dataset: ceil(n · w · 1.005).

    The 0.5% margin is GPT-NeoX's, so a blend never runs a dataset dry.
    """
    _weight_array(weights)
    total_samples = as_int(num_samples, "num_samples", 0)
    total = sum(weights)
    normalised = [w / total for w in weights]
    return normalised, [math.ceil(total_samples * w * 1.005) for w in normalised]


def weights_by_num_docs(
    num_docs: Sequence[int], alpha: float = 0.3, limit: int | None = None
) -> list[float]:
    """GPT-NeoX's `weight_by_num_documents` weights: p ∝ (n/N)^alpha, times (1 − n/N).

    alpha < 1 up-weights small datasets; `limit` caps the documents counted per dataset.
    A single dataset gets weight 1.0, as in GPT-NeoX (callers weigh each split on its own,
    and a split may hold one dataset; the formula itself would give 0/0 there).
    """
    counts = [as_int(n, "num_docs", 0) for n in num_docs]
    if len(counts) == 1:
        return [1.0]
    if limit:
        limit = as_int(limit, "limit", 1)
        counts = [min(n, limit) for n in counts]
    total_docs = sum(counts)
    if total_docs <= 0:
        raise ValueError(f"num_docs must hold a positive count, got {list(num_docs)}")
    shares = [n / total_docs for n in counts]
    probs = [share**alpha for share in shares]
    probs_total = sum(probs)
    probs = [p / probs_total for p in probs]
    weights = [p * (1 - share) for p, share in zip(probs, shares, strict=True)]
    weights_total = sum(weights)
    if weights_total <= 0:
        raise ValueError("weights_by_num_docs needs at least two non-empty datasets")
    return [w / weights_total for w in weights]
