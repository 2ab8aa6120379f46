"""Argument checks of the Python index API: bad input is a ValueError naming the argument."""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

INT64_MAX = 2**63 - 1


def as_int(value: object, name: str, minimum: int | None = None) -> int:
    """An exact integer (Python or NumPy, never bool or float), at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}")
    if result > INT64_MAX:
        raise ValueError(f"{name} must fit int64, got {result}")
    return result


def as_id_array(values: npt.ArrayLike, name: str) -> np.ndarray:
    """Document ids as a 1-D int32/int64 array; sequences are converted, arrays are not copied."""
    if isinstance(values, np.ndarray):
        array = values
    else:
        array = np.asarray(values)
        if array.size == 0:
            array = array.astype(np.int64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        if isinstance(values, np.ndarray):
            raise ValueError(f"{name} must have dtype int32 or int64, got {array.dtype}")
        array = array.astype(np.int64)
    return array


def require_random_state(rng: object, name: str = "rng") -> np.random.RandomState:
    """GPT-NeoX shuffles with the legacy numpy.random.RandomState; a Generator differs."""
    if not isinstance(rng, np.random.RandomState):
        raise ValueError(
            f"{name} must be a numpy.random.RandomState (GPT-NeoX's generator), "
            f"got {type(rng).__name__}"
        )
    return rng
