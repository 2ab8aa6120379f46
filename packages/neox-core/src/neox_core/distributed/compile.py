"""`torch.compile` of each decoder layer, applied from outside the model.

Per layer rather than the whole model (as torchtitan does): the layers are identical, so one
compiled graph serves them all and compile time is that of one layer; FSDP2's per-layer
all-gather/reduce-scatter hooks and the activation-checkpoint wrapping sit at layer
boundaries, where a whole-model graph would have to trace through them; and `Module.compile`
compiles in place, so parameter names (and checkpoints) do not change. What runs outside
the layers (embedding, final norm, head and loss) is a few percent of a step.
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


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """Compile each of `model.layers` in place (after TP and activation checkpointing)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no `layers` to compile")
    for layer in layers:
        layer.compile(dynamic=False, backend=backend)
