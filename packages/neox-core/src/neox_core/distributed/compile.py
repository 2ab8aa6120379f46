"""`torch.compile` of each decoder layer, applied from outside the model.

Per layer rather than the whole model (as torchtitan does): the layers are identical, so one
compiled graph serves them all and compile time is that of one layer; FSDP2's per-layer
all-gather/reduce-scatter hooks and the activation-checkpoint wrapping sit at layer
boundaries, where a whole-model graph would have to trace through them; and `Module.compile`
compiles in place, so parameter names (and checkpoints) do not change. What runs outside
the layers (embedding, final norm, head and loss) is a few percent of a step.

On CUDA the layers are compiled with inductor's C++ wrapper (`compile_cpp_wrapper`): the code
that launches a layer's kernels is C++ instead of Python. Small models are host-bound: on an
H200, Pythia-410M's host took 85-94 ms to enqueue a step the GPU ran in 96-103 ms, and the GPU
waited between layers (docs/architecture.md). It costs compile time (a C++ build of the
wrapper, once per graph; inductor caches it).
"""

from __future__ import annotations

import torch
from torch import nn


def compile_enabled(setting: str, device: torch.device) -> bool:
    """The `compile` key: "true", "false", or "auto" (on for CUDA, off for CPU)."""
    if setting == "auto":
        return device.type == "cuda"
    if setting not in ("true", "false"):
        raise ValueError(f"compile {setting!r}: expected true, false or auto")
    return setting == "true"


def cpp_wrapper_enabled(setting: str, device: torch.device) -> bool:
    """The `compile_cpp_wrapper` key: "true", "false", or "auto" (on for CUDA, off for CPU,
    where CI's compile test would pay a C++ build per graph)."""
    if setting == "auto":
        return device.type == "cuda"
    if setting not in ("true", "false"):
        raise ValueError(f"compile_cpp_wrapper {setting!r}: expected true, false or auto")
    return setting == "true"


def apply_compile(model: nn.Module, backend: str = "inductor", cpp_wrapper: bool = False) -> None:
    """Compile each of `model.layers` in place (after TP and activation checkpointing);
    `cpp_wrapper`: inductor launches the kernels from generated C++ (module docstring), for
    every graph this process compiles from now on (see below)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no `layers` to compile")
    if cpp_wrapper and backend == "inductor":
        # process-wide: `torch.compile(options={"cpp_wrapper": True})` does not reach the
        # backward graphs, which inductor compiles lazily at the first backward, outside the
        # option's scope (torch 2.11 fails with "CudaKernelParamCache not populated";
        # pytorch/pytorch#178845)
        import torch._inductor.config as inductor_config

        inductor_config.cpp_wrapper = True
    for layer in layers:
        layer.compile(dynamic=False, backend=backend)
