"""One optimizer step (gradient accumulation, precision, clipping, NaN handling) and eval.

With `StepSettings.defer_sync` (what `neox-train` sets where it can: bf16 or fp32, a fused
AdamW, no pipeline) the step never waits for the GPU: the loss, the gradient norm and the
finite check stay on the device, clipping uses a device-side coefficient, and a non-finite
step is skipped by the optimizer itself (fused AdamW's `found_inf`: weights, moments and its
step count stay as they were). The loop reads the results when it logs, evaluates or saves
(`resolve_results`, one transfer for many steps) and then applies `on_nan: stop` and takes the
skipped steps back out of the learning-rate schedule. Under several processes the step
all-reduces its loss and finite flag on the device before the update, so every rank skips
the same steps and the result already holds the mean loss (`StepResult.reduced`); the loop
agrees on stopping through `stop_vote.StopVote`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist

from neox_core.distributed.attention_backend import sdpa_context
from neox_core.distributed.grad_norm import (
    clip_divisor,
    clip_grad_norm,
    sum_partial_grads,
    total_grad_norm,
)
from neox_core.models.fused_ops import lm_loss
from neox_core.training.batch import make_batch
from neox_core.training.param_stats import parameter_stats
from neox_core.training.precision import DynamicLossScaler, StaticLossScaler, autocast
from neox_core.training.schedules import AnnealingSchedule


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients were NaN/inf and `on_nan: stop` is configured."""


@dataclass
class StepResult:
    # with defer_sync the first four are 0-d device tensors until `resolve_results` reads them
    loss: float  # mean over the micro-batches
    grad_norm: float  # before clipping
    skipped: bool  # the optimizer did not step (overflow or NaN)
    nan: bool  # the loss or the gradients were not finite
    # per-parameter charts asked for by log_grad_norm / log_param_norm / log_grad_pct_zeros
    param_stats: dict[str, float] = field(default_factory=dict)
    # a train_impl plug-in's metrics (TRL's names), mean over the micro-batches
    metrics: dict[str, float] = field(default_factory=dict)
    # a deferred step under several processes: loss is the mean over the data-parallel
    # ranks and skipped/nan the same on every rank (all-reduced on the device)
    reduced: bool = False

    @property
    def pending(self) -> bool:
        """Whether the values still live on the device (a deferred step)."""
        return isinstance(self.loss, torch.Tensor)


def resolve_results(results: list[StepResult]) -> list[StepResult]:
    """The results with host values, read in one device-to-host transfer for all of them."""
    pending = [r for r in results if r.pending]
    if not pending:
        return results
    device = pending[0].loss.device  # type: ignore[attr-defined]
    rows = [
        torch.stack([torch.as_tensor(v).to(device, torch.float32).reshape(()) for v in values])
        for values in ((r.loss, r.grad_norm, r.skipped, r.nan) for r in pending)
    ]
    read = iter(torch.stack(rows).tolist())
    out = []
    for r in results:
        if r.pending:
            loss, norm, skipped, nan = next(read)
            r = replace(r, loss=loss, grad_norm=norm, skipped=skipped > 0, nan=nan > 0)
        out.append(r)
    return out


@dataclass
class StepSettings:
    precision: str  # "fp32" | "bf16" | "fp16"
    gradient_accumulation_steps: int
    clip_grad: float
    on_nan: str  # "skip" | "stop"
    device: torch.device
    log_grad_norm: bool = False
    log_param_norm: bool = False
    log_grad_pct_zeros: bool = False
    impl: Any = None  # a train_impl.TrainImpl plug-in (DPO, KTO, RM, ...); None: LM loss
    # SDPA backends in priority order (distributed/attention_backend.py); []: torch's default
    attention_backends: list[Any] = field(default_factory=list)
    # keep the step's results on the device where that is exact (see the module docstring)
    defer_sync: bool = False
    # pipeline parallelism: a distributed.pipeline.Pipeline runs forward and backward
    pipeline: Any = None


def can_defer(
    optimizer: torch.optim.Optimizer,
    scaler: DynamicLossScaler | StaticLossScaler | None,
    s: StepSettings,
) -> bool:
    """Whether this step can leave its results on the device (see the module docstring).

    fp16's loss scaler needs each step's overflow on the host; per-parameter charts and a
    plug-in's metrics are host floats; only a fused AdamW skips a step on a device flag; a
    pipeline's loss and gradient norm are spread over its stages.
    """
    return (
        s.defer_sync
        and scaler is None
        and s.precision != "fp16"
        and s.impl is None
        and s.pipeline is None
        and not (s.log_grad_norm or s.log_param_norm or s.log_grad_pct_zeros)
        and bool(getattr(optimizer, "defaults", {}).get("fused"))
    )


def _micro_batches(data: Iterator[dict[str, torch.Tensor]], n: int, device: torch.device):
    for _ in range(n):
        # copy the loader's (pinned) tensors as they are, then slice on the device
        yield {k: v.to(device, non_blocking=True) for k, v in next(data).items()}


def micro_batch_loss(
    model: torch.nn.Module, sample: dict[str, torch.Tensor], s: StepSettings
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch and its metrics: next-token prediction or the plug-in's."""

    def forward(m: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        with autocast(s.precision, s.device):
            return m(tokens)

    if s.impl is not None:
        return s.impl.loss(model, sample, forward)
    return lm_loss(model, make_batch(sample), autocast(s.precision, s.device)), {}


class _PrecisionAndKernel(contextlib.ExitStack):
    """autocast and the SDPA kernel choice around a pipeline schedule's forwards/backwards."""

    def __init__(self, s: StepSettings) -> None:
        super().__init__()
        self._s = s

    def __enter__(self):
        super().__enter__()
        self.enter_context(autocast(self._s.precision, self._s.device))
        self.enter_context(sdpa_context(self._s.attention_backends))
        return self


def mean_metrics(per_micro_batch: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the micro-batches that reported it."""
    sums: dict[str, list[float]] = {}
    for metrics in per_micro_batch:
        for k, v in metrics.items():
            sums.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in sums.items()}


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: AnnealingSchedule,
    scaler: DynamicLossScaler | StaticLossScaler | None,
    data: Iterator[dict[str, torch.Tensor]],
    s: StepSettings,
    iteration: int,
) -> StepResult:
    """Forward/backward over `gradient_accumulation_steps` micro-batches, then one update.

    fp16 scales the loss and skips steps whose gradients overflow (the scaler adapts);
    otherwise a non-finite loss or gradient skips the step or raises, per `on_nan`. A
    skipped step does not advance the learning-rate schedule (as with DeepSpeed).
    """
    gas = s.gradient_accumulation_steps
    scale = scaler.scale if scaler is not None else 1.0
    optimizer.zero_grad(set_to_none=True)
    losses, metrics = [], []
    norm_kw = {}
    if s.pipeline is not None:  # the schedule runs every micro batch (losses on the last stage)
        ctx = _PrecisionAndKernel(s)
        losses = s.pipeline.forward_backward(list(_micro_batches(data, gas, s.device)), scale, ctx)
        norm_kw = s.pipeline.norm_kwargs()
    for i, sample in enumerate(_micro_batches(data, gas if s.pipeline is None else 0, s.device)):
        sync = getattr(model, "no_sync", None)
        ctx = sync() if sync is not None and i < gas - 1 else contextlib.nullcontext()
        with ctx, sdpa_context(s.attention_backends):
            loss, micro_metrics = micro_batch_loss(model, sample, s)
            (loss * (scale / gas)).backward()
        losses.append(loss.detach())
        metrics.append(micro_metrics)
    # sequence-parallel norm weights: their gradients' sums, once, before anything reads them
    sum_partial_grads(p for g in optimizer.param_groups for p in g["params"])
    if can_defer(optimizer, scaler, s):
        return _deferred_update(optimizer, schedule, torch.stack(losses).mean(), s)
    loss_value = torch.stack(losses).mean().item()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if scale != 1.0:
        for p in params:
            p.grad.div_(scale)  # type: ignore[union-attr]  (DTensor: divides its local piece)
    # before clipping, which scales the gradients in place
    stats = parameter_stats(
        model,
        grad_norm=s.log_grad_norm,
        param_norm=s.log_param_norm,
        grad_pct_zeros=s.log_grad_pct_zeros,
    )
    # the norm of the whole model's gradient on every rank, also when TP/ZeRO shard them
    norm = (
        clip_grad_norm(params, s.clip_grad, **norm_kw)
        if s.clip_grad > 0
        else total_grad_norm(params, **norm_kw)
    )
    grad_norm = float(norm)
    loss_ok, grads_ok = math.isfinite(loss_value), math.isfinite(grad_norm)
    if s.precision == "fp16" and scaler is not None:
        scaler.update(overflow=not grads_ok)
        if not loss_ok and s.on_nan == "stop":
            raise NonFiniteLossError(f"iteration {iteration}: loss is {loss_value}")
        skipped, nan = not grads_ok, not loss_ok
    else:
        nan = not (loss_ok and grads_ok)
        if nan and s.on_nan == "stop":
            raise NonFiniteLossError(
                f"iteration {iteration}: loss {loss_value}, gradient norm {grad_norm} "
                "(on_nan: stop)"
            )
        skipped = nan
    if not skipped:
        optimizer.step()
        schedule.step(optimizer)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, grad_norm, skipped, nan, stats, mean_metrics(metrics))


def _deferred_update(
    optimizer: torch.optim.Optimizer,
    schedule: AnnealingSchedule,
    loss: torch.Tensor,
    s: StepSettings,
) -> StepResult:
    """Clip and step without a host sync; a non-finite loss or norm skips on the device.

    Clipping rides on the fused AdamW: its `grad_scale` divides each gradient as the kernel
    reads it (GradScaler's hook), instead of a separate pass that scales them in place.
    Under several processes one all-reduce on the device sums the ranks' losses and
    non-finite flags (TP ranks hold the same loss; no pipeline here), so a NaN loss on one
    rank skips the step on all of them, as the synced path's host all-reduce does.
    """
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    norm = total_grad_norm(params).to(loss.device)
    bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world > 1:
        sums = torch.stack([loss.float(), bad.float()])
        dist.all_reduce(sums)
        loss, bad = sums[0] / world, sums[1] > 0
    optimizer.found_inf = bad.float()  # type: ignore[attr-defined]  (read by fused AdamW)
    if s.clip_grad > 0:
        optimizer.grad_scale = clip_divisor(norm, s.clip_grad)  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf  # type: ignore[attr-defined]
        optimizer.__dict__.pop("grad_scale", None)
    schedule.step(optimizer)  # taken back by the loop if the step turns out skipped
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, norm, bad, bad, reduced=world > 1)  # type: ignore[arg-type]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: Iterator[dict[str, torch.Tensor]],
    eval_iters: int,
    s: StepSettings,
) -> float:
    """This rank's mean loss over `eval_iters` x `gradient_accumulation_steps` micro-batches."""
    return evaluate_with_metrics(model, data, eval_iters, s)[0]


@torch.no_grad()
def evaluate_with_metrics(
    model: torch.nn.Module,
    data: Iterator[dict[str, torch.Tensor]],
    eval_iters: int,
    s: StepSettings,
) -> tuple[float, dict[str, float]]:
    """(mean loss, mean plug-in metrics) of this rank over the eval micro-batches."""
    model.eval()
    try:
        losses, metrics = [], []
        n = eval_iters * s.gradient_accumulation_steps
        if s.pipeline is not None:
            batches = list(_micro_batches(data, n, s.device))
            losses = s.pipeline.eval_losses(batches, _PrecisionAndKernel(s))
            n = 0
        for sample in _micro_batches(data, n, s.device):
            with sdpa_context(s.attention_backends):
                loss, micro_metrics = micro_batch_loss(model, sample, s)
            losses.append(loss)
            metrics.append(micro_metrics)
        return torch.stack(losses).mean().item(), mean_metrics(metrics)
    finally:
        model.train()


def eval_results(loss: float) -> dict[str, float]:
    """GPT-NeoX's eval summary from the loss averaged over ranks: the ppl is taken after."""
    return {"lm_loss": loss, "lm_loss_ppl": math.exp(min(loss, 700.0))}
