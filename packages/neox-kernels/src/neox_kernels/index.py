"""neox's dataset index API: NumPy arrays in, NumPy arrays out, GPT-NeoX's semantics.

The same corpus, seed and settings give the same arrays as GPT-NeoX (values and dtypes), so
index caches stay interchangeable. The loops run in C++ (`neox_kernels._index`) with the GIL
released; bad input raises ValueError naming the argument.

One call per `pack_impl` builds a dataset's three arrays (an `IndexMaps`):

    build_packed_index(documents, sizes, num_samples, seq_length, seed, epochs=None)
    build_pack_until_overflow_index(documents, sizes, num_samples, seq_length, seed,
                                    allow_chopped=True, skip=None)
    build_unpacked_index(documents, sizes, num_samples, seq_length, seed,
                         allow_chopped=True, skip=None)
    build_index_maps(pack_impl, ...)       # dispatch on the config string
    index_map_paths(data_prefix, name, ...) # GPT-NeoX's .npy cache names

`documents` are the split's document ids (int32/int64 array or sequence), `sizes` the int32
tokens per document id of the `.idx` file (memory-mapped is fine). Reading sample j of any
IndexMaps: k = shuffle_idx[j]; from sample_idx[k] = (p, o) to sample_idx[k + 1] = (q, e)
take doc_idx[p][o:], doc_idx[p+1..q-1] whole, doc_idx[q][:e + 1]; pad (tokens 0, labels
-100) or cut to seq_length + 1. `len(maps)` is the number of samples GPT-NeoX serves.

The `packed` steps, for callers that cache or inspect them one by one (one RandomState(seed)
feeds build_doc_idx, then build_shuffle_idx):

    num_tokens(documents, sizes) -> int          tokens per epoch
    num_epochs(tokens_per_epoch, seq_length, num_samples) -> int
    num_samples(num_epochs, tokens_per_epoch, seq_length) -> int
    build_doc_idx(documents, num_epochs, rng) -> int32 [epochs * len(documents)]
    build_sample_idx(sizes, doc_idx, seq_length, num_epochs, tokens_per_epoch)
        -> int32 or int64 [num_samples + 1, 2] (int32 where GPT-NeoX uses it and it fits)
    build_shuffle_idx(size, rng) -> uint32 or int64 [size]

Blending datasets by weight (BlendableDataset):

    build_blending_indices(weights, size) -> BlendingIndices(dataset_index uint8,
                                             dataset_sample_index int64, samples_per_dataset)
    normalized_weights_and_num_samples(weights, num_samples) -> (weights, per-dataset samples)
    weights_by_num_docs(num_docs, alpha=0.3, limit=None) -> weights
"""

from __future__ import annotations

from neox_kernels.blending_index import (
    BlendingIndices,
    build_blending_indices,
    normalized_weights_and_num_samples,
    weights_by_num_docs,
)
from neox_kernels.index_maps import (
    PACK_IMPLS,
    IndexMaps,
    PackImpl,
    build_index_maps,
    build_pack_until_overflow_index,
    build_packed_index,
    build_unpacked_index,
    index_map_paths,
)
from neox_kernels.packed_index import (
    build_doc_idx,
    build_sample_idx,
    build_shuffle_idx,
    num_epochs,
    num_samples,
    num_tokens,
    sample_idx_dtype,
)

__all__ = [
    "PACK_IMPLS",
    "BlendingIndices",
    "IndexMaps",
    "PackImpl",
    "build_blending_indices",
    "build_doc_idx",
    "build_index_maps",
    "build_pack_until_overflow_index",
    "build_packed_index",
    "build_sample_idx",
    "build_shuffle_idx",
    "build_unpacked_index",
    "index_map_paths",
    "normalized_weights_and_num_samples",
    "num_epochs",
    "num_samples",
    "num_tokens",
    "sample_idx_dtype",
    "weights_by_num_docs",
]
