"""RNG states of python, numpy and torch (CPU and CUDA) as tensors + JSON: no pickle."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RngState = tuple[dict[str, torch.Tensor], dict[str, Any]]


def capture_rng_state(device: torch.device | None = None) -> RngState:
    """This process's generators; with a CUDA `device`, only that device's CUDA state.

    A data-parallel rank passes its own device, so its `rng_rank<R>` holds one CUDA state,
    which `restore_rng_state` puts back on the current device of the loading rank.
    """
    tensors = {"torch_cpu": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        tensors["torch_cuda_0"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    meta = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "cuda_devices": sum(1 for k in tensors if k.startswith("torch_cuda_")),
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    py = meta["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
    npy = meta["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            np.asarray(npy["keys"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    n_cuda = int(meta.get("cuda_devices", 0))
    if n_cuda and torch.cuda.is_available():
        states = [tensors[f"torch_cuda_{i}"] for i in range(n_cuda)]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            torch.cuda.set_rng_state(states[0])
