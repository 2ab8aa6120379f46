"""Which implementation an op runs: the compiled CUDA kernels or the PyTorch reference.

The CUDA extension (`neox_kernels._cuda`) takes raw device pointers and the current stream,
so it is built without torch headers and works under any torch. An op takes the CUDA path
when its tensors are on a CUDA device, the extension was built, and `NEOX_KERNELS_REFERENCE`
is not set to 1 (a debugging switch that forces the references everywhere).
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType

import torch
from torch import Tensor

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


@cache
def cuda_extension() -> ModuleType | None:
    """The compiled kernels, or None where the package was built without CUDA."""
    try:
        from neox_kernels import _cuda
    except ImportError:
        return None
    return _cuda


def reference_forced() -> bool:
    return os.environ.get("NEOX_KERNELS_REFERENCE", "0") == "1"


def use_cuda(*tensors: torch.Tensor | None) -> bool:
    """True when these tensors should go through the compiled kernels."""
    first = next(t for t in tensors if t is not None)
    return (
        first.is_cuda
        and first.dtype in _DTYPE_CODES
        and not reference_forced()
        and cuda_extension() is not None
    )


def dtype_code(t: torch.Tensor) -> int:
    return _DTYPE_CODES[t.dtype]


def ptr(t: torch.Tensor | None) -> int:
    """Device address of a tensor's first element (0 for None)."""
    return 0 if t is None else t.data_ptr()


def stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def device_index(t: torch.Tensor) -> int:
    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def acc(t: Tensor) -> Tensor:
    """The accumulation dtype of the references: fp32, or fp64 for fp64 inputs."""
    return t if t.dtype == torch.float64 else t.float()


def stat_dtype(t: Tensor) -> torch.dtype:
    """dtype of per-row statistics: fp32, or fp64 for fp64 inputs."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32
