"""One optimizer step (gradient accumulation, precision, clipping, NaN handling) and eval."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from neox_core.distributed.grad_norm import clip_grad_norm, total_grad_norm
from neox_core.models.fused_ops import lm_loss
from neox_core.training.batch import make_batch
from neox_core.training.param_stats import parameter_stats
from neox_core.training.precision import DynamicLossScaler, StaticLossScaler, autocast
from neox_core.training.schedules import AnnealingSchedule


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients were NaN/inf and `on_nan: stop` is configured."""


@dataclass
class StepResult:
    loss: float  # mean over the micro-batches
    grad_norm: float  # before clipping
    skipped: bool  # the optimizer did not step (overflow or NaN)
    nan: bool  # the loss or the gradients were not finite
    # per-parameter charts asked for by log_grad_norm / log_param_norm / log_grad_pct_zeros
    param_stats: dict[str, float] = field(default_factory=dict)
    # a train_impl plug-in's metrics (TRL's names), mean over the micro-batches
    metrics: dict[str, float] = field(default_factory=dict)


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
    for i, sample in enumerate(_micro_batches(data, gas, s.device)):
        sync = getattr(model, "no_sync", None)
        ctx = sync() if sync is not None and i < gas - 1 else contextlib.nullcontext()
        with ctx:
            loss, micro_metrics = micro_batch_loss(model, sample, s)
            (loss * (scale / gas)).backward()
        losses.append(loss.detach())
        metrics.append(micro_metrics)
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
    norm = clip_grad_norm(params, s.clip_grad) if s.clip_grad > 0 else total_grad_norm(params)
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
        for sample in _micro_batches(data, eval_iters * s.gradient_accumulation_steps, s.device):
            loss, micro_metrics = micro_batch_loss(model, sample, s)
            losses.append(loss)
            metrics.append(micro_metrics)
        return torch.stack(losses).mean().item(), mean_metrics(metrics)
    finally:
        model.train()


def eval_results(loss: float) -> dict[str, float]:
    """GPT-NeoX's eval summary from the loss averaged over ranks: the ppl is taken after."""
    return {"lm_loss": loss, "lm_loss_ppl": math.exp(min(loss, 700.0))}
