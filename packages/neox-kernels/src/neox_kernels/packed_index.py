"""The `packed` index (GPT-NeoX's default): documents concatenated, samples cross boundaries.

Each step mirrors one helper of GPT-NeoX's gpt2_dataset.py so that the same corpus, seed and
sequence length give the same three arrays, value for value and dtype for dtype.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from neox_kernels import _index
from neox_kernels._checks import as_id_array, as_int, require_random_state

INT32_MAX = int(np.iinfo(np.int32).max)
UINT32_MAX = int(np.iinfo(np.uint32).max)


def num_tokens(documents: npt.ArrayLike, sizes: np.ndarray) -> int:
    """Tokens in one epoch of the split: sum of sizes[documents] (ids checked, no temporaries)."""
    return int(_index.sum_document_sizes(sizes, as_id_array(documents, "documents")))


def num_epochs(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """The fewest epochs giving num_samples samples: (epochs·tokens − 1) // seq_length ≥ it."""
    tokens = as_int(tokens_per_epoch, "tokens_per_epoch", 1)
    seq = as_int(seq_length, "seq_length", 1)
    wanted = as_int(num_samples, "num_samples", 0)
    # Closed form of GPT-NeoX's epoch-by-epoch loop: epochs·tokens ≥ wanted·seq + 1.
    return max(1, -(-(wanted * seq + 1) // tokens))


def num_samples(num_epochs: int, tokens_per_epoch: int, seq_length: int) -> int:
    """Samples the packed index holds: (num_epochs · tokens_per_epoch − 1) // seq_length."""
    return int(
        _index.num_samples(
            as_int(num_epochs, "num_epochs", 1),
            as_int(tokens_per_epoch, "tokens_per_epoch", 1),
            as_int(seq_length, "seq_length", 1),
        )
    )


def sample_idx_dtype(
    num_epochs: int, tokens_per_epoch: int, seq_length: int, doc_idx_len: int
) -> np.dtype:
    """int32 exactly where GPT-NeoX picks it, unless positions into doc_idx would not fit."""
    # GPT-NeoX's test, in floating point as there: 2 * (num_samples + 1) < int32 max.
    approx_samples = (num_epochs * tokens_per_epoch - 1) / seq_length
    if 2 * (approx_samples + 1) < INT32_MAX and doc_idx_len <= INT32_MAX:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def build_doc_idx(
    documents: npt.ArrayLike, num_epochs: int, rng: np.random.RandomState
) -> np.ndarray:
    """The split's documents repeated num_epochs times, shuffled together with `rng`.

    int32 as GPT-NeoX (int64 only when an id would not fit). Advances `rng` exactly as
    GPT-NeoX's _build_doc_idx, so the shuffle index drawn next matches too.
    """
    docs = as_id_array(documents, "documents")
    epochs = as_int(num_epochs, "num_epochs", 1)
    require_random_state(rng)
    if docs.size == 0:
        raise ValueError("documents is empty")
    if int(docs.min()) < 0:
        raise ValueError(f"documents holds a negative id ({int(docs.min())})")
    dtype = np.int32 if int(docs.max()) <= INT32_MAX else np.int64
    # GPT-NeoX tiles through an int64 mgrid and casts; filling in place gives the same values
    # at a third of the memory, and shuffling them consumes the generator identically.
    doc_idx = np.empty(epochs * docs.size, dtype=dtype)
    doc_idx.reshape(epochs, docs.size)[:] = docs
    rng.shuffle(doc_idx)
    return doc_idx


def build_sample_idx(
    sizes: np.ndarray,
    doc_idx: np.ndarray,
    seq_length: int,
    num_epochs: int,
    tokens_per_epoch: int,
) -> np.ndarray:
    """[num_samples + 1, 2] rows of (position in doc_idx, offset in that document).

    Sample k spans from row k to row k + 1, that row's token included: seq_length + 1 tokens,
    overlapping the next sample by one. sizes must be int32, doc_idx int32 or int64, both
    one-dimensional and C-contiguous (memory-mapped arrays are fine; nothing is copied).
    """
    seq = as_int(seq_length, "seq_length", 1)
    epochs = as_int(num_epochs, "num_epochs", 1)
    tokens = as_int(tokens_per_epoch, "tokens_per_epoch", 1)
    if not isinstance(sizes, np.ndarray) or not isinstance(doc_idx, np.ndarray):
        raise ValueError("sizes and doc_idx must be numpy arrays")
    dtype = sample_idx_dtype(epochs, tokens, seq, doc_idx.shape[0] if doc_idx.ndim else 0)
    return _index.build_sample_idx(sizes, doc_idx, seq, epochs, tokens, dtype == np.int64)


def build_shuffle_idx(size: int, rng: np.random.RandomState) -> np.ndarray:
    """A permutation of range(size) drawn from `rng`; uint32 unless size needs int64."""
    count = as_int(size, "size", 0)
    require_random_state(rng)
    dtype = np.uint32 if count < UINT32_MAX - 1 else np.int64
    shuffle_idx = np.arange(count, dtype=dtype)
    rng.shuffle(shuffle_idx)
    return shuffle_idx
