"""Suite-wide test policy: skip hardware-bound tests cleanly and keep the default run fast."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest


@functools.cache
def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("markexpr") or ""
    run_slow = "slow" in markexpr
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with `-m slow`"))
        if "gpu" in item.keywords and _cuda_device_count() < 1:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "multigpu" in item.keywords and _cuda_device_count() < 2:
            item.add_marker(pytest.mark.skip(reason="needs two or more CUDA devices"))


def write_learnable_corpus(directory: Path) -> str:
    """A corpus a tiny model learns within a few steps: 120 documents, each a run of an
    arithmetic progression modulo 96 (seeded: the bytes never change, so losses compared
    across runs and golden files stay valid). Writes `<directory>/corpus_text_document.{bin,idx}`
    unless present; returns that prefix."""
    import numpy as np

    from neox_data.indexed_dataset import write_dataset

    prefix = directory / "corpus_text_document"
    if not prefix.with_suffix(".idx").exists():
        rng = np.random.default_rng(0)
        docs = []
        for _ in range(120):
            start, step, n = rng.integers(0, 96), rng.integers(1, 5), rng.integers(10, 60)
            docs.append(((start + step * np.arange(n)) % 96).astype(np.uint16))
        write_dataset(prefix, docs, np.uint16)
    return str(prefix)


@pytest.fixture
def learnable_corpus() -> Callable[[Path], str]:
    """`write_learnable_corpus`, for tests of any package (trainer runs, layouts, SLURM)."""
    return write_learnable_corpus
