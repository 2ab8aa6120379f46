"""The three index arrays of one dataset, built per `pack_impl` exactly as GPT-NeoX builds them.

One call per pack_impl (or `build_index_maps` to dispatch on the config string) returns
doc_idx, sample_idx and shuffle_idx. Every pack_impl is read the same way (GPT-NeoX's
GPT2Dataset.__getitem__): sample j is k = shuffle_idx[j], from sample_idx[k] = (p, o) to
sample_idx[k + 1] = (q, e) — the rest of document doc_idx[p] from offset o, all of documents
doc_idx[p+1..q-1], and the first e + 1 tokens of doc_idx[q] — padded or cut to
seq_length + 1 tokens. `packed` samples are exactly seq_length + 1 tokens already.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from neox_kernels import _index
from neox_kernels._checks import as_id_array, as_int
from neox_kernels.packed_index import (
    build_doc_idx,
    build_sample_idx,
    build_shuffle_idx,
    num_epochs,
    num_tokens,
)

PackImpl = Literal["packed", "pack_until_overflow", "unpacked"]
PACK_IMPLS: tuple[str, ...] = ("packed", "pack_until_overflow", "unpacked")


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare by
class IndexMaps:
    """doc_idx, sample_idx and shuffle_idx of one dataset, and how they were made."""

    pack_impl: str
    doc_idx: np.ndarray
    sample_idx: np.ndarray  # [n + 1, 2]: (position in doc_idx, token offset)
    shuffle_idx: np.ndarray
    num_epochs: int | None  # epochs of documents in doc_idx (packed only)

    def __len__(self) -> int:
        """Samples GPT-NeoX's GPT2Dataset serves: min(len(shuffle_idx), len(sample_idx)) − 1.

        This is one less than len(shuffle_idx) for every pack_impl: GPT-NeoX never serves the
        last shuffled sample, and a compatible loader should not either.
        """
        return max(0, min(self.shuffle_idx.shape[0] - 1, self.sample_idx.shape[0] - 1))


def _seeded(seed: int) -> np.random.RandomState:
    return np.random.RandomState(as_int(seed, "seed", 0))


def _skip_mask(skip: np.ndarray | None) -> np.ndarray | None:
    if skip is None:
        return None
    if not isinstance(skip, np.ndarray) or skip.dtype != np.bool_:
        raise ValueError("skip must be None or a numpy bool array indexed by document id")
    return skip


def build_packed_index(
    documents: npt.ArrayLike,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    epochs: int | None = None,
) -> IndexMaps:
    """`packed`: every document of every epoch concatenated, cut into overlapping samples.

    epochs defaults to the fewest giving num_samples samples (GPT-NeoX's `_num_epochs`);
    the index then holds at least num_samples samples (all the epochs' tokens allow).
    """
    docs = as_id_array(documents, "documents")
    seq = as_int(seq_length, "seq_length", 1)
    wanted = as_int(num_samples, "num_samples", 0)
    tokens_per_epoch = num_tokens(docs, sizes)
    if tokens_per_epoch < 1:
        raise ValueError("the documents hold no tokens: nothing to build a packed index from")
    if not epochs:
        epochs = num_epochs(tokens_per_epoch, seq, wanted)
    rng = _seeded(seed)
    doc_idx = build_doc_idx(docs, epochs, rng)
    sample_idx = build_sample_idx(sizes, doc_idx, seq, epochs, tokens_per_epoch)
    shuffle_idx = build_shuffle_idx(sample_idx.shape[0] - 1, rng)
    return IndexMaps("packed", doc_idx, sample_idx, shuffle_idx, epochs)


def build_pack_until_overflow_index(
    documents: npt.ArrayLike,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    allow_chopped: bool = True,
    skip: np.ndarray | None = None,
) -> IndexMaps:
    """`pack_until_overflow`: whole documents per sample until the next would overflow.

    Documents are drawn in a fresh shuffle of the split each pass. A document longer than
    seq_length + 1 gets a sample of its own (truncated when read) with allow_chopped, and is
    left out without. `skip[doc_id]` True leaves a document out too (GPT-NeoX: labels all
    -100 in its first seq_length + 1 tokens). doc_idx holds document ids (int64).
    """
    docs = as_id_array(documents, "documents")
    wanted = as_int(num_samples, "num_samples", 0)
    seq = as_int(seq_length, "seq_length", 1)
    rng = _seeded(seed)
    shuffle_idx = np.arange(wanted)
    rng.shuffle(shuffle_idx)
    order = np.arange(docs.shape[0], dtype=np.int64)
    rng.shuffle(order)
    doc_idx, sample_idx = _index.build_pack_until_overflow(
        sizes,
        docs,
        order,
        seq,
        wanted,
        bool(allow_chopped),
        _skip_mask(skip),
        lambda: rng.shuffle(order),
    )
    return IndexMaps("pack_until_overflow", doc_idx, sample_idx, shuffle_idx, None)


def build_unpacked_index(
    documents: npt.ArrayLike,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    allow_chopped: bool = True,
    skip: np.ndarray | None = None,
) -> IndexMaps:
    """`unpacked`: one document per sample, in split order, cycling over the split.

    Documents longer than seq_length + 1 are truncated when read (allow_chopped) or left
    out; `skip[doc_id]` True leaves a document out (GPT-NeoX: labels all -100 in its first
    seq_length tokens). doc_idx holds num_samples + 1 document ids (int64).
    """
    docs = as_id_array(documents, "documents")
    wanted = as_int(num_samples, "num_samples", 0)
    seq = as_int(seq_length, "seq_length", 1)
    rng = _seeded(seed)
    shuffle_idx = np.arange(wanted)
    rng.shuffle(shuffle_idx)
    doc_idx, sample_idx = _index.build_unpacked(
        sizes, docs, seq, wanted, bool(allow_chopped), _skip_mask(skip)
    )
    return IndexMaps("unpacked", doc_idx, sample_idx, shuffle_idx, None)


def build_index_maps(
    pack_impl: PackImpl,
    documents: npt.ArrayLike,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    allow_chopped: bool = True,
    skip: np.ndarray | None = None,
) -> IndexMaps:
    """Dispatch on the `pack_impl` config value; `allow_chopped`/`skip` are ignored by packed."""
    if pack_impl == "packed":
        return build_packed_index(documents, sizes, num_samples, seq_length, seed)
    if pack_impl == "pack_until_overflow":
        return build_pack_until_overflow_index(
            documents, sizes, num_samples, seq_length, seed, allow_chopped, skip
        )
    if pack_impl == "unpacked":
        return build_unpacked_index(
            documents, sizes, num_samples, seq_length, seed, allow_chopped, skip
        )
    raise ValueError(f"pack_impl must be one of {', '.join(PACK_IMPLS)}, got {pack_impl!r}")


def index_map_paths(
    data_prefix: str | os.PathLike[str],
    name: str,
    num_samples: int,
    seq_length: int,
    seed: int,
    pack_impl: PackImpl = "packed",
    allow_chopped: bool = True,
) -> dict[str, str]:
    """GPT-NeoX's cache file names of the three arrays, keyed doc/sample/shuffle."""
    if pack_impl not in PACK_IMPLS:
        raise ValueError(f"pack_impl must be one of {', '.join(PACK_IMPLS)}, got {pack_impl!r}")
    stem = (
        f"{os.fspath(data_prefix)}_{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s"
        f"_{pack_impl}pi{'_ac' if allow_chopped else ''}"
    )
    return {kind: f"{stem}_{kind}_idx.npy" for kind in ("doc", "sample", "shuffle")}
