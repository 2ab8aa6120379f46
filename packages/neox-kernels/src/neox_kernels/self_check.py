"""Invariants of the compiled index builders, checked on random corpora (`neox-kernels self-check`).

A quick way to see an installed wheel works on this machine: each check builds an index
through the public API and verifies a property any correct index has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neox_kernels import index


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


def _token_starts(sizes: np.ndarray, doc_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    ends = np.cumsum(sizes[doc_idx], dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    return starts[rows[:, 0]] + rows[:, 1]


def _packed_samples_are_seq_length_apart(rng: np.random.Generator) -> str:
    sizes = rng.integers(0, 500, size=5000).astype(np.int32)
    documents = np.arange(100, 5000)
    maps = index.build_packed_index(documents, sizes, 20_000, 256, seed=int(rng.integers(1 << 31)))
    gaps = np.diff(_token_starts(sizes, maps.doc_idx, maps.sample_idx))
    assert np.all(gaps == 256), "consecutive samples do not start seq_length tokens apart"
    counts = np.bincount(maps.doc_idx, minlength=5000)
    assert np.all(counts[documents] == maps.num_epochs) and counts[:100].sum() == 0, (
        "doc_idx is not every document once per epoch"
    )
    shuffled = np.sort(maps.shuffle_idx)
    assert np.array_equal(shuffled, np.arange(shuffled.size)), "shuffle_idx is no permutation"
    return f"{maps.sample_idx.shape[0] - 1} samples over {maps.num_epochs} epochs"


def _blend_follows_weights(rng: np.random.Generator) -> str:
    weights = rng.random(7) * (rng.random(7) > 0.2) + 1e-3
    size = 200_000
    blend = index.build_blending_indices(weights, size)
    counts = np.bincount(blend.dataset_index, minlength=len(weights))
    assert np.array_equal(counts, blend.samples_per_dataset), "samples_per_dataset is wrong"
    for d in range(len(weights)):
        taken = blend.dataset_sample_index[blend.dataset_index == d]
        assert np.array_equal(taken, np.arange(taken.size)), "a dataset's samples skip or repeat"
    deviation = np.abs(counts - weights / weights.sum() * size).max()
    # The greedy choice keeps every dataset within about one sample of its share.
    assert deviation <= 2.0, f"a dataset is {deviation:.2f} samples off its weight"
    return f"max deviation from the weights {deviation:.3f} samples"


def _pack_until_overflow_never_overflows(rng: np.random.Generator) -> str:
    sizes = rng.integers(1, 1500, size=4000).astype(np.int32)
    maps = index.build_pack_until_overflow_index(
        np.arange(4000), sizes, 3000, 1024, seed=3, allow_chopped=False
    )
    tokens = np.add.reduceat(sizes[maps.doc_idx], maps.sample_idx[:-1, 0])
    assert tokens.max() <= 1025, "a sample holds more than seq_length + 1 tokens"
    assert sizes[maps.doc_idx].max() <= 1025, "a too-long document was packed"
    return f"{maps.doc_idx.size} documents in {maps.sample_idx.shape[0] - 1} samples"


def _unpacked_cycles_usable_documents(rng: np.random.Generator) -> str:
    sizes = rng.integers(0, 100, size=50).astype(np.int32)
    skip = rng.random(50) < 0.3
    maps = index.build_unpacked_index(np.arange(50), sizes, 500, 64, 0, False, skip)
    usable = [d for d in range(50) if sizes[d] <= 65 and not skip[d]]
    expected = np.resize(np.array(usable), 501)
    assert np.array_equal(maps.doc_idx, expected), "unpacked doc_idx is not the usable cycle"
    return f"{len(usable)} usable documents cycled"


def _bad_input_is_a_value_error(rng: np.random.Generator) -> str:
    sizes = rng.integers(1, 10, size=10)  # int64: the wrong dtype
    try:
        index.build_sample_idx(sizes, np.arange(10, dtype=np.int32), 4, 1, int(sizes.sum()))
    except ValueError as error:
        return str(error)
    raise AssertionError("int64 sizes were accepted")


CHECKS: dict[str, Callable[[np.random.Generator], str]] = {
    "packed samples are seq_length apart": _packed_samples_are_seq_length_apart,
    "blend follows the weights": _blend_follows_weights,
    "pack_until_overflow never overflows": _pack_until_overflow_never_overflows,
    "unpacked cycles the usable documents": _unpacked_cycles_usable_documents,
    "bad input is a ValueError": _bad_input_is_a_value_error,
}


def _fused_kernel_checks(seed: int) -> list[CheckResult]:
    """Each fused op's CUDA kernel against its fp64 reference (only where CUDA runs)."""
    try:
        import torch

        from neox_kernels.ops import cuda_available, verify
    except ImportError:
        return []
    if not cuda_available():
        return []
    results = []
    for case in verify.quick_cases():
        for dtype in (torch.float32, torch.bfloat16):
            name = f"{case.name} {str(dtype).removeprefix('torch.')}"
            try:
                error = verify.check(case, torch.device("cuda"), dtype, seed)
            except Exception as exc:  # a crash in a kernel is a failed check, not a traceback
                results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
                continue
            limit = verify.TOLERANCE[dtype]
            results.append(
                CheckResult(name, error < limit, f"relative error {error:.1e} (limit {limit:.0e})")
            )
    return results


def run_self_check(seed: int = 0) -> list[CheckResult]:
    """Run every check; a failing one is reported, not raised.

    The index checks run everywhere; the fused-kernel checks where the CUDA kernels were
    built and a GPU is visible.
    """
    results = []
    for name, check in CHECKS.items():
        try:
            results.append(CheckResult(name, True, check(np.random.default_rng(seed))))
        except AssertionError as error:
            results.append(CheckResult(name, False, str(error)))
    return results + _fused_kernel_checks(seed)
