"""Pure Python/NumPy reference of the index builders, written from GPT-NeoX's semantics.

Deliberately plain: straight loops that follow gpt2_dataset.py and helpers.cpp step by step,
plus one vectorised NumPy formulation of the packed sample index (fast enough to serve as
the benchmark's baseline). The C++ must agree with these value for value and dtype for dtype.
"""

from __future__ import annotations

import math

import numpy as np


def num_epochs_loop(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """GPT-NeoX's _num_epochs: add epochs until they give num_samples samples."""
    epochs, total = 0, 0
    while True:
        epochs += 1
        total += tokens_per_epoch
        if (total - 1) // seq_length >= num_samples:
            return epochs


def doc_idx_neox(documents: np.ndarray, epochs: int, rng: np.random.RandomState) -> np.ndarray:
    """GPT-NeoX's _build_doc_idx: an int64 mgrid of documents per epoch, cast, shuffled."""
    grid = np.mgrid[0:epochs, 0 : len(documents)][1]
    grid[:] = documents
    doc_idx = grid.reshape(-1).astype(np.int32)
    rng.shuffle(doc_idx)
    return doc_idx


def sample_idx_loop(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int, epochs: int, tokens_per_epoch: int
) -> np.ndarray:
    """helpers.cpp's walk, token by document: int64 [(E*T - 1) // S + 1, 2]."""
    n = (epochs * tokens_per_epoch - 1) // seq_length
    out = np.zeros((n + 1, 2), dtype=np.int64)
    position, offset = 0, 0
    for k in range(1, n + 1):
        remaining = seq_length + 1
        while remaining != 0:
            length = int(sizes[doc_idx[position]]) - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                position += 1
                offset = 0
        out[k] = (position, offset)
    return out


def sample_idx_vectorised(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int, epochs: int, tokens_per_epoch: int
) -> np.ndarray:
    """The same index in whole-array NumPy: row k is where global token k * seq_length lies.

    That token sits in the first document whose cumulative end passes it (empty documents
    never qualify); row 0 is (0, 0) whatever the first document holds.
    """
    n = (epochs * tokens_per_epoch - 1) // seq_length
    ends = np.cumsum(sizes[doc_idx], dtype=np.int64)
    starts = np.arange(n + 1, dtype=np.int64) * seq_length
    position = np.searchsorted(ends, starts, side="right")
    out = np.empty((n + 1, 2), dtype=np.int64)
    out[:, 0] = position
    out[:, 1] = starts - (ends[position] - sizes[doc_idx[position]])
    out[0] = (0, 0)
    return out


def shuffle_idx_neox(size: int, rng: np.random.RandomState) -> np.ndarray:
    """GPT-NeoX's _build_shuffle_idx."""
    dtype = np.uint32 if size < np.iinfo(np.uint32).max - 1 else np.int64
    shuffle_idx = np.arange(size, dtype=dtype)
    rng.shuffle(shuffle_idx)
    return shuffle_idx


def packed_neox(
    documents: np.ndarray, sizes: np.ndarray, num_samples: int, seq_length: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPT-NeoX's packed branch of _build_index_maps, start to end."""
    tokens = int(np.sum(sizes[documents]))
    epochs = num_epochs_loop(tokens, seq_length, num_samples)
    rng = np.random.RandomState(seed=seed)
    doc_idx = doc_idx_neox(documents, epochs, rng)
    sample_idx = sample_idx_loop(sizes, doc_idx, seq_length, epochs, tokens)
    approx = (epochs * tokens - 1) / seq_length
    sample_idx = sample_idx.astype(
        np.int32 if 2 * (approx + 1) < np.iinfo(np.int32).max else np.int64
    )
    shuffle_idx = shuffle_idx_neox(sample_idx.shape[0] - 1, rng)
    return doc_idx, sample_idx, shuffle_idx


def pack_until_overflow_neox(
    documents: np.ndarray,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    allow_chopped: bool = True,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPT-NeoX's pack_until_overflow branch, with positions mapped through `documents`.

    Where GPT-NeoX would index past the order after skipping the last document of a pass
    (an IndexError there), this wraps and reshuffles, as the C++ does.
    """
    rng = np.random.RandomState(seed=seed)
    shuffle_idx = np.arange(num_samples)
    rng.shuffle(shuffle_idx)
    rows: list[list[int]] = []
    doc_idx: list[int] = []
    order = np.arange(len(documents))
    rng.shuffle(order)
    running, cursor = 0, 0
    while len(rows) < num_samples:
        if cursor == len(documents):
            cursor = 0
            rng.shuffle(order)
        doc = int(documents[order[cursor]])
        if not allow_chopped and sizes[doc] > seq_length + 1:
            cursor += 1
            continue
        if skip is not None and skip[doc]:
            cursor += 1
            continue
        length = int(sizes[doc])
        if running == 0:
            rows.append([len(doc_idx), 0])
            doc_idx.append(doc)
            running += length
        else:
            if running + length > seq_length + 1:
                running = length
                rows.append([len(doc_idx), 0])
            else:
                running += length
            doc_idx.append(doc)
        cursor += 1
        if cursor == len(documents):
            cursor = 0
            rng.shuffle(order)
    rows.append([len(doc_idx), 0])
    return np.array(doc_idx, dtype=np.int64), np.array(rows, dtype=np.int64), shuffle_idx


def unpacked_neox(
    documents: np.ndarray,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    allow_chopped: bool = True,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPT-NeoX's unpacked branch, with positions mapped through `documents`."""
    rng = np.random.RandomState(seed=seed)
    shuffle_idx = np.arange(num_samples)
    rng.shuffle(shuffle_idx)
    sample_idx = np.zeros((num_samples + 1, 2), dtype=np.int64)
    sample_idx[:, 0] = np.arange(num_samples + 1)
    doc_idx: list[int] = []
    position = 0
    while len(doc_idx) <= num_samples:
        doc = int(documents[position])
        position = (position + 1) % len(documents)
        if not allow_chopped and sizes[doc] > seq_length + 1:
            continue
        if skip is not None and skip[doc]:
            continue
        doc_idx.append(doc)
    return np.array(doc_idx, dtype=np.int64), sample_idx, shuffle_idx


def blending_loop(weights: list[float] | np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """BlendableDataset + helpers.cpp: normalise with NumPy, then the greedy loop in floats."""
    w = np.array(weights, dtype=np.float64)
    w /= np.sum(w)
    w_list = [float(x) for x in w]
    taken = [0] * len(w_list)
    dataset_index = np.zeros(size, dtype=np.uint8)
    dataset_sample_index = np.zeros(size, dtype=np.int64)
    for i in range(size):
        scale = max(float(i), 1.0)
        best, best_error = 0, w_list[0] * scale - float(taken[0])
        for d in range(1, len(w_list)):
            error = w_list[d] * scale - float(taken[d])
            if error > best_error:
                best, best_error = d, error
        dataset_index[i] = best
        dataset_sample_index[i] = taken[best]
        taken[best] += 1
    return dataset_index, dataset_sample_index


def normalized_weights_and_num_samples_neox(
    weights: list[float], num_samples: int
) -> tuple[list[float], list[int]]:
    """data_utils.get_normalized_weights_and_num_samples."""
    total = sum(weights)
    normalised = [w / total for w in weights]
    return normalised, [math.ceil(num_samples * w * 1.005) for w in normalised]


def weights_by_num_docs_neox(num_docs: list[int], alpha: float = 0.3, limit: int | None = None):
    """data_utils.weights_by_num_docs."""
    if len(num_docs) == 1:
        return [1.0]
    if limit:
        num_docs = [min(n, limit) for n in num_docs]
    total = sum(num_docs)
    unbiased = [n / total for n in num_docs]
    probs = [p**alpha for p in unbiased]
    probs = [p / sum(probs) for p in probs]
    weights = [p * (1 - u) for p, u in zip(probs, unbiased, strict=True)]
    return [w / sum(weights) for w in weights]
