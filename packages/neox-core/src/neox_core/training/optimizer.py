"""AdamW over two parameter groups: decayed weights, and biases/norms without weight decay."""

from __future__ import annotations

from typing import Any

import torch

from neox_core.models.fused_ops import use_fused_adamw


def _is_no_decay(module: torch.nn.Module, name: str, param: torch.nn.Parameter) -> bool:
    return name.endswith("bias") or "norm" in type(module).__name__.lower() or param.ndim < 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """GPT-NeoX's split: no weight decay for biases and norm weights (all if decay is 0)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if weight_decay == 0.0 or _is_no_decay(module, name, p):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: torch.nn.Module,
    *,
    type: str,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    fused_kernels: bool = True,
) -> torch.optim.Optimizer:
    """AdamW (GPT-NeoX's "adam" is decoupled-weight-decay Adam too), fused on CUDA.

    With `fused_kernels` (the model's switch, `model.fused_kernels`) and fp32 CUDA parameters
    where neox-kernels' CUDA kernels run, neox-kernels' FusedAdamW: torch's AdamW with a
    faster multi-tensor step, the same state and state_dict (`fused_ops.use_fused_adamw`).
    """
    if type.lower() not in ("adam", "adamw"):
        raise ValueError(f"optimizer type {type!r} unsupported; neox supports 'adam'/'adamw'")
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_cuda and p.dtype.is_floating_point for p in params)
    cls = torch.optim.AdamW
    if use_fused_adamw(fused_kernels, params):
        from neox_kernels.optim import FusedAdamW

        cls = FusedAdamW
    return cls(
        param_groups(model, weight_decay),
        lr=lr,
        betas=tuple(betas),  # type: ignore[arg-type]
        eps=eps,
        weight_decay=weight_decay,
        fused=fused or None,
    )
