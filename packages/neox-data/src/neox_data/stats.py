"""Token and document statistics of datasets and of raw inputs (`count`, `inspect`)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np

from neox_data.indexed_dataset import MMapIndexedDataset, dataset_exists


def length_histogram(lengths: np.ndarray) -> list[dict[str, int]]:
    """Document counts in power-of-two length buckets [lo, hi)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    top = int(lengths.max())
    edges = [0, 1]
    while edges[-1] <= top:
        edges.append(edges[-1] * 2)
    counts, _ = np.histogram(lengths, bins=edges)
    return [
        {"min": edges[i], "max": edges[i + 1] - 1, "documents": int(c)}
        for i, c in enumerate(counts)
        if c
    ]


def length_stats(lengths: np.ndarray) -> dict[str, Any]:
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return {"documents": 0, "tokens": 0, "histogram": []}
    return {
        "documents": int(lengths.size),
        "tokens": int(lengths.sum()),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "mean_length": round(float(lengths.mean()), 2),
        "median_length": float(np.median(lengths)),
        "histogram": length_histogram(lengths),
    }


def document_lengths(ds: MMapIndexedDataset) -> np.ndarray:
    """Tokens per document (items of a document summed)."""
    doc_idx = np.asarray(ds.doc_idx, dtype=np.int64)
    if len(doc_idx) < 2:
        return np.zeros(0, dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(ds.sizes, dtype=np.int64)])
    return csum[doc_idx[1:]] - csum[doc_idx[:-1]]


def dataset_stats(prefix: str) -> dict[str, Any]:
    with MMapIndexedDataset(prefix) as ds:
        stats = length_stats(document_lengths(ds))
        stats.update(
            {
                "prefix": prefix,
                "format": "TNTIDX (legacy, read only)" if ds.is_legacy else "MMIDIDX v1",
                "dtype": str(ds.dtype),
                "items": len(ds),
                "bin_bytes": ds.bin_size,
            }
        )
        if ds.dtype.kind == "i" and ds.num_tokens:
            data = ds.bin_tokens()
            masked = int((data == -100).sum())
            if masked:
                stats["masked_tokens"] = masked
                stats["trained_tokens"] = int(data.size) - masked
    return stats


def resolve_prefixes(prefix: str) -> list[str]:
    """A full dataset prefix, or the `--output-prefix` of a tokenization (all its pairs)."""
    if dataset_exists(prefix):
        return [prefix]
    found = sorted(glob.glob(f"{glob.escape(prefix)}_*_document.idx"))
    prefixes = [f[: -len(".idx")] for f in found if dataset_exists(f[: -len(".idx")])]
    if not prefixes:
        where = Path(prefix).parent
        raise FileNotFoundError(
            f"no dataset at {prefix!r}: neither {prefix}.bin/.idx nor "
            f"{prefix}_<key>_document.bin/.idx exist (looked in {where or os.curdir})"
        )
    return prefixes
