"""A quick timing of the compiled builders on a synthetic corpus (`neox-kernels bench`).

The C++ side only; benchmarks/index_build.py compares against the NumPy reference and
measures peak memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neox_kernels import index


@dataclass(frozen=True)
class BenchRow:
    name: str
    seconds: float
    output_mb: float


def synthetic_sizes(num_docs: int, mean_tokens: int, seed: int = 0) -> np.ndarray:
    """Document sizes with a long tail (geometric), int32 as in a .idx file."""
    rng = np.random.default_rng(seed)
    return rng.geometric(1.0 / mean_tokens, size=num_docs).astype(np.int32)


def _timed(name: str, build: Callable[[], object]) -> tuple[BenchRow, object]:
    start = time.perf_counter()
    result = build()
    seconds = time.perf_counter() - start
    arrays = result if isinstance(result, tuple) else (result,)
    size = sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))
    return BenchRow(name, seconds, size / 2**20), result


def run_bench(
    num_docs: int,
    mean_tokens: int,
    seq_length: int,
    epochs: int,
    blend_samples: int,
    blend_datasets: int,
) -> list[BenchRow]:
    """Time doc_idx, sample_idx, shuffle_idx and a blend; returns one row each."""
    sizes = synthetic_sizes(num_docs, mean_tokens)
    documents = np.arange(num_docs, dtype=np.int32)
    tokens = index.num_tokens(documents, sizes)
    rng = np.random.RandomState(1234)
    rows = []
    row, doc_idx = _timed(
        f"doc_idx ({epochs} epochs)", lambda: index.build_doc_idx(documents, epochs, rng)
    )
    rows.append(row)
    row, sample_idx = _timed(
        f"sample_idx ({tokens / 1e9:.2f}B tokens/epoch)",
        lambda: index.build_sample_idx(sizes, doc_idx, seq_length, epochs, tokens),
    )
    rows.append(row)
    row, _ = _timed("shuffle_idx", lambda: index.build_shuffle_idx(sample_idx.shape[0] - 1, rng))
    rows.append(row)
    weights = np.linspace(1.0, 2.0, blend_datasets)
    row, _ = _timed(
        f"blend ({blend_datasets} datasets)",
        lambda: tuple(index.build_blending_indices(weights, blend_samples)),
    )
    rows.append(row)
    return rows
