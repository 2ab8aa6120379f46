"""Activation checkpointing applied from outside the model: full or selective, per layer.

    full       GPT-NeoX's `checkpoint_activations`: each decoder layer keeps only its input;
               its forward runs again in the backward (one more forward's FLOPs)
    selective  the outputs of matmuls and attention are kept, the cheap ops between them
               (norms, rotary, activations, residual adds, casts) are recomputed; less
               memory saved than full, at a few percent of the time instead of a third
               (torchtitan's "selective op" policy, on torch.utils.checkpoint)

Each layer's `forward` is replaced on the instance, so module names and checkpoints do not
change (no wrapper module); `torch.compile` applied after this traces the checkpoint too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

import neox_core.models.flash_attention4  # noqa: F401  (registers the neox_fa4 ops for _SAVE)

MODES = ("none", "full", "selective")


def _ops(names: list[tuple[str, str]]) -> set[Any]:
    """The aten/neox overloads that exist in this torch (names move between versions)."""
    found = set()
    for namespace, name in names:
        packet = getattr(getattr(torch.ops, namespace, None), name, None)
        if packet is not None:
            found.add(packet.default if hasattr(packet, "default") else packet)
    return found


# kept under selective checkpointing: the expensive outputs
_SAVE = _ops(
    [
        ("aten", "mm"),
        ("aten", "addmm"),
        ("aten", "bmm"),
        ("aten", "_scaled_dot_product_flash_attention"),
        ("aten", "_scaled_dot_product_efficient_attention"),
        ("aten", "_scaled_dot_product_cudnn_attention"),
        ("aten", "_scaled_dot_product_flash_attention_for_cpu"),
        # the fused rotary rotates the QKV matmul output in place: replaying it on the kept
        # (already rotated) output would rotate twice, so its result is kept as well
        ("neox", "rotary_"),
        ("neox_fa4", "fwd"),  # FlashAttention-4 (models/flash_attention4.py, imported above)
    ]
)


def _selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVE else CheckpointPolicy.PREFER_RECOMPUTE


def _checkpointed(layer: nn.Module, forward: Callable[..., Any], mode: str) -> Callable[..., Any]:
    context_fn = (
        partial(create_selective_checkpoint_contexts, _selective_policy)
        if mode == "selective"
        else None
    )

    def run(*args: Any, **kwargs: Any) -> Any:
        if not (layer.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        if context_fn is None:
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, context_fn=context_fn, **kwargs)

    return run


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """Checkpoint each of `model.layers` per `mode` ("none", "full" or "selective"), in place."""
    if mode not in MODES:
        raise ValueError(f"activation_checkpoint_mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "none":
        return
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no `layers` to checkpoint")
    # the model's own per-layer switch (for callers that build it bare) would checkpoint twice
    if hasattr(model, "checkpoint_activations"):
        model.checkpoint_activations = False
    for layer in layers:
        layer.forward = _checkpointed(layer, layer.forward, mode)
