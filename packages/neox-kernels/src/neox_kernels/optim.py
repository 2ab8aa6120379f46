"""FusedAdamW: torch.optim.AdamW whose CUDA step runs neox-kernels' multi-tensor AdamW kernel.

Why: torch's fused AdamW launches one kernel per ~110 tensors, each less than a wave of the GPU,
and reaches about two thirds of the copy bandwidth on an H200 (10.1 ms per step at Pythia-1B's
1.01 B fp32 parameters). neox's kernel (csrc/cuda/adamw.cu) covers up to 512 tensors per
launch with one resident wave striding over all their chunks, 16-byte accesses.

A drop-in for torch.optim.AdamW: same constructor, same state (`step` an fp32 scalar on the
parameter's device, `exp_avg`, `exp_avg_sq`), so state dicts load into either class; the same
numerics as `AdamW(fused=True)` (the kernel follows ATen's fused functor operation for
operation); and the GradScaler protocol of torch's fused optimizers: `optimizer.grad_scale`
(device fp32 scalar, each gradient is divided by it as read) and `optimizer.found_inf` (device
fp32 scalar; nonzero: parameters, moments and step counts stay as they were), as neox-core's
deferred step sets them. Unlike torch, the unscaled gradients are not written back into
`p.grad`.

The kernel takes a parameter group when every parameter with a gradient is a contiguous CUDA
fp32 tensor on one device with a contiguous fp32 gradient (DTensors: their local shards, when
parameter, gradient and moments share one mesh and placement, which is what DTensor's own
dispatch of torch's fused kernel runs on), `fused` is on, amsgrad and maximize are off, the
extension was built with CUDA and NEOX_KERNELS_REFERENCE is not 1. Any other group takes
torch's own step (fused, foreach or for-loop, as torch chooses). `fused=None` (the default)
turns torch's fused path on where torch supports it (CUDA and CPU floating-point parameters),
so `defaults["fused"]` reports what runs and GradScaler's attributes work on every path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor

from neox_kernels.ops import _backend as be

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    DTensor = None  # type: ignore[assignment,misc]


_KERNEL_DEVICE = "cuda"  # the device type the kernel runs on (tests emulate it on the CPU)


@cache
def _torch_adam() -> Callable[..., None] | None:
    """torch's functional Adam with `decoupled_weight_decay` (torch >= 2.7, where AdamW is Adam
    with decoupled decay and `Adam._init_group` is AdamW's), or None for older torch."""
    try:
        from torch.optim.adam import adam
    except ImportError:
        return None
    return adam if "decoupled_weight_decay" in inspect.signature(adam).parameters else None


def kernel_available() -> bool:
    """Whether FusedAdamW can run the neox kernel here: the extension is built with CUDA, a GPU
    is visible, NEOX_KERNELS_REFERENCE is not 1 and torch is recent enough (>= 2.7)."""
    from neox_kernels.ops import cuda_available

    return _torch_adam() is not None and cuda_available()


def _fusable(params: list[Tensor]) -> bool:
    return bool(params) and all(
        p.dtype.is_floating_point and p.device.type in ("cuda", "cpu") for p in params
    )


class FusedAdamW(torch.optim.AdamW):
    """torch.optim.AdamW with neox-kernels' CUDA step (module docstring: when it applies)."""

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if differentiable:
            raise ValueError("FusedAdamW does not support differentiable=True; use torch's AdamW")
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
        )
        all_params = [p for g in self.param_groups for p in g["params"]]
        if fused is None and not foreach and _fusable(all_params):
            # what AdamW(fused=True) sets up (torch's __init__ saw fused=None)
            self.defaults["fused"] = True
            for group in self.param_groups:
                if group.get("fused") is None:
                    group["fused"] = True
            self._step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One AdamW step: the neox kernel for the groups it applies to, torch's for the rest."""
        adam = _torch_adam()
        if adam is None:  # torch < 2.7: AdamW's own step (its step hooks, if any, run twice)
            return super().step(closure)
        check = getattr(self, "_accelerator_graph_capture_health_check", None) or getattr(
            self, "_cuda_graph_capture_health_check", None
        )
        if check is not None:
            check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            max_exp_avg_sqs: list[Tensor] = []
            steps: list[Tensor] = []
            has_complex = self._init_group(
                group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
            )
            if not params:
                continue
            if _kernel_step(group, params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale, found_inf):  # fmt: skip
                continue
            beta1, beta2 = group["betas"]
            adam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                steps,
                amsgrad=group["amsgrad"],
                has_complex=has_complex,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                foreach=group["foreach"],
                capturable=group["capturable"],
                differentiable=group["differentiable"],
                fused=group["fused"],
                grad_scale=grad_scale,
                found_inf=found_inf,
                decoupled_weight_decay=True,
            )
        return loss


def _local(ts: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
    """(param, grad, exp_avg, exp_avg_sq) as they are, or for a DTensor parameter their local
    shards when all four share its mesh and placement (else None: torch's step redistributes
    what it must). The moments of a plain parameter are plain (zeros_like, or loaded to it)."""
    if DTensor is None or not isinstance(ts[0], DTensor):
        return None if DTensor is not None and isinstance(ts[1], DTensor) else ts
    spec = (ts[0].device_mesh, ts[0].placements)
    if not all(isinstance(t, DTensor) and (t.device_mesh, t.placements) == spec for t in ts):
        return None
    return tuple(t._local_tensor for t in ts)  # to_local()'s tensor, without its autograd node


# tensors whose data_ptr() addresses their elements (no wrapper subclass)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _on(t: Tensor | None, device: torch.device) -> Tensor | None:
    return None if t is None else t.to(device=device, dtype=torch.float32, non_blocking=True)


def _kernel_step(
    group: dict[str, Any],
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> bool:
    """Run the neox kernel on one group's tensors; False where it does not apply."""
    if not group["fused"] or group["amsgrad"] or group["maximize"] or group["differentiable"]:
        return False
    ext = be.cuda_extension()
    if ext is None or be.reference_forced() or params[0].device.type != _KERNEL_DEVICE:
        return False
    beta1, beta2 = group["betas"]
    if isinstance(beta1, Tensor) or isinstance(beta2, Tensor):
        return False
    device = params[0].device
    f32 = torch.float32
    ps, gs, ms, vs, ss, ns = [], [], [], [], [], []
    for quad, step in zip(zip(params, grads, exp_avgs, exp_avg_sqs, strict=True), steps, strict=True):  # fmt: skip
        local = _local(quad)
        if local is None:
            return False
        p, g, m, v = local
        n = p.numel()
        for t in local:
            if type(t) not in _PLAIN or t.layout != torch.strided:
                return False
            if t.device != device or t.dtype != f32:
                return False
            if t.numel() != n or not t.is_contiguous():
                return False
        if step.device != device or step.dtype != f32 or step.numel() != 1:
            return False
        ps.append(p.data_ptr())
        gs.append(g.data_ptr())
        ms.append(m.data_ptr())
        vs.append(v.data_ptr())
        ss.append(step.data_ptr())
        ns.append(n)
    lr = group["lr"]
    lr_value, lr_tensor = 0.0, None
    if not isinstance(lr, Tensor):
        lr_value = float(lr)
    elif lr.device.type == "cpu":
        lr_value = float(lr)  # a host value: no device sync
    else:
        lr_tensor = _on(lr, device)
    scale, inf = _on(grad_scale, device), _on(found_inf, device)
    ext.adamw_step(
        be.device_index(params[0]), ps, gs, ms, vs, ss, ns, lr_value, be.ptr(lr_tensor),
        float(beta1), float(beta2), float(group["weight_decay"]), float(group["eps"]),
        be.ptr(scale), be.ptr(inf), be.stream(params[0]),
    )  # fmt: skip
    return True


__all__ = ["FusedAdamW", "kernel_available"]
