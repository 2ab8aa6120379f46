"""Suite-wide test policy: skip hardware-bound tests cleanly and keep the default run fast."""

from __future__ import annotations

import functools

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
