"""Load `torch.save` files with `weights_only=True` only, including legacy DeepSpeed ones.

Legacy checkpoints pickle a few non-tensor objects next to the weights (argument namespaces,
DeepSpeed bookkeeping). Instead of falling back to a full unpickle, each such class is mapped
to an inert placeholder that only records the state it is given: no code from the file runs,
and the tensors load as usual.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from neox_ckpt.errors import ConversionError


class Placeholder:
    """Stands in for a class the checkpoint pickled; keeps its arguments and state as data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _placeholders(names: list[str]) -> list[tuple[type, str]]:
    out = []
    for full in names:
        module, _, qual = full.rpartition(".")
        out.append((type(qual or full, (Placeholder,), {"__module__": module}), full))
    return out


def load_weights_only(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` (memory-mapped where the file format allows)."""
    path = Path(path)

    def attempt() -> Any:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) serialization cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)

    try:
        try:
            return attempt()
        except pickle.UnpicklingError:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            with torch.serialization.safe_globals(_placeholders(names)):
                return attempt()
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise ConversionError(
            f"{path}: cannot load with torch.load(weights_only=True): {e}"
        ) from None
