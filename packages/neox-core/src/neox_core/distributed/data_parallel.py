"""GPT-NeoX's `zero_optimization` stages on torch.distributed, over the mesh's "dp" dimension.

    stage 0   plain data parallel: every rank holds everything, gradients are all-reduced
              (torch DDP; with tensor parallelism a small hook-based all-reduce, see below)
    stage 1   FSDP2 `fully_shard` per decoder layer and the root, reshard_after_forward=False:
    stage 2     optimizer state, gradients and (between steps) parameters are sharded; each
              layer's parameters stay gathered from its forward to its backward (ZeRO-2's
              traffic: one all-gather and one reduce-scatter per layer and micro batch)
    stage 1,  with gradient accumulation: the micro batches before the last keep their
     more       gradients unsharded (summed in fp32) and their parameters gathered (`no_sync`),
     than one   so a step all-gathers and reduce-scatters each layer once, as DeepSpeed's
     micro      stage 1 reduces only at the accumulation boundary; it holds full-size fp32
     batch      gradients for that, as DeepSpeed's stage 1 does. Stage 2 keeps reducing every
                micro batch (sharded gradients, ZeRO-2's memory)
    stage 3   the same with reshard_after_forward=True: parameters are freed after each
              layer's forward and gathered again for its backward (ZeRO-3)
    offload   FSDP2's CPUOffloadPolicy: sharded parameters, gradients and the optimizer step
              live on the CPU (FSDP2 has no optimizer-only offload, so `offload_optimizer`
              offloads the parameter shards too)

FSDP2 always reduce-scatters gradients, so with one micro batch per step stages 1 and 2 run the
same way here and both save what DeepSpeed's stage 2 saves (more than DeepSpeed's stage 1,
never less). The numbers are those of one process with the whole batch, up to float summation
order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor

from neox_core.config.schema import ParallelConfig


class ReplicatedGradSync(nn.Module):
    """ZeRO 0 for parameters DDP cannot hold (DTensors under tensor parallelism).

    After the backward of a step's last micro-batch each gradient (its local TP piece) is
    summed over the data-parallel group as soon as it is ready, and divided by the group size:
    DDP's all-reduce-mean, minus its bucketing. `no_sync()` skips it for earlier micro-batches
    (the same contract as DDP's, which training/step.py relies on).
    """

    def __init__(self, module: nn.Module, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.module = module
        self._group = group
        self._size = dist.get_world_size(group)
        self._sync = True
        self._pending: list[tuple[torch.Tensor, dist.Work]] = []
        self._callback_queued = False
        for p in module.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(self._reduce)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self._sync = False
        try:
            yield
        finally:
            self._sync = True

    def _reduce(self, p: torch.Tensor) -> None:
        if not self._sync or p.grad is None:
            return
        local = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
        self._pending.append((local, dist.all_reduce(local, group=self._group, async_op=True)))
        if not self._callback_queued:
            self._callback_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._wait)

    def _wait(self) -> None:
        for local, work in self._pending:
            work.wait()
            local.div_(self._size)
        self._pending.clear()
        self._callback_queued = False


class _Zero1NoSync:
    """`no_sync()` for a ZeRO 1 model (FSDP2): training/step.py enters it for every micro
    batch of a step but the last, as it does DDP's.

    Inside, FSDP2 neither reduce-scatters the gradients (it sums them unsharded, in the
    reduce dtype, fp32) nor reshards the parameters after the backward, so the next micro
    batch needs no all-gather; the last micro batch runs outside it and reduce-scatters the
    sum once, then reshards.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.module.set_requires_gradient_sync(False)  # type: ignore[operator]
        self.module.set_reshard_after_backward(False)  # type: ignore[operator]
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)  # type: ignore[operator]
            self.module.set_reshard_after_backward(True)  # type: ignore[operator]


def _fsdp_kwargs(mesh: DeviceMesh, p: ParallelConfig, device: torch.device) -> dict:
    from torch.distributed.fsdp import CPUOffloadPolicy

    kw: dict = {"mesh": mesh}
    if (p.offload_optimizer or p.offload_param) and device.type == "cuda":
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
    return kw


def _gather_policy(p: ParallelConfig) -> dict:
    """`zero_gather_dtype: bf16`: the layers' parameters are cast to bf16 before the
    all-gather (half the bytes; autocast would cast them for the matmuls anyway) and their
    gradients reduce-scattered in fp32, as torchtitan does. The layers' inputs are left as they
    come (`cast_forward_inputs=False`), so the residual stream keeps autocast's fp32, and the
    root (embedding, final norm, head) gathers fp32. What changes against fp32 gathers: the
    norms' weights and biases are rounded to bf16 as autocast rounds the linears' already, and
    their gradients are rounded to bf16 before the fp32 reduction."""
    if p.zero_gather_dtype != "bf16":
        return {}
    from torch.distributed.fsdp import MixedPrecisionPolicy

    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
    )
    return {"mp_policy": policy}


def apply_data_parallel(
    model: nn.Module, dp_mesh: DeviceMesh, p: ParallelConfig, device: torch.device
) -> nn.Module:
    """Wrap `model` for its ZeRO stage over `dp_mesh`; returns the module to train.

    Stage 1-3 shard in place (the returned module is `model`, now an FSDPModule); stage 0
    returns a DDP-style wrapper (the caller keeps `model` for checkpoints). With one
    data-parallel rank nothing is wrapped: there is nothing to shard or average.
    """
    if dp_mesh.size() == 1:
        return model
    if p.zero_stage == 0:
        has_dtensor = any(isinstance(t, DTensor) for t in model.parameters())
        if has_dtensor:
            return ReplicatedGradSync(model, dp_mesh.get_group())
        return nn.parallel.DistributedDataParallel(
            model,
            process_group=dp_mesh.get_group(),
            device_ids=[device.index] if device.type == "cuda" else None,
        )
    from torch.distributed.fsdp import fully_shard

    kw = _fsdp_kwargs(dp_mesh, p, device)
    reshard = p.zero_stage == 3
    layers = list(getattr(model, "layers", []))
    layer_kw = dict(kw, **_gather_policy(p))
    for i, layer in enumerate(layers):
        # the last layer's backward starts right after its forward: keep it gathered
        fully_shard(layer, reshard_after_forward=reshard and i < len(layers) - 1, **layer_kw)
    # the root holds the embedding, final norm and head (the tied head is the embedding)
    fully_shard(model, reshard_after_forward=False, **kw)
    if p.zero_stage == 1 and "offload_policy" not in kw:  # reduce at the accumulation boundary
        model.no_sync = _Zero1NoSync(model)  # type: ignore[assignment]
    return model
