"""The training loop: step, log, save, evaluate, stop on a signal. Setup lives in run.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from neox_core.checkpoint import is_save_iteration
from neox_core.training.log_line import format_eval_line, format_train_line
from neox_core.training.precision import DynamicLossScaler, StaticLossScaler
from neox_core.training.schedules import AnnealingSchedule
from neox_core.training.signals import StopRequest
from neox_core.training.state import IntervalStats, Progress
from neox_core.training.step import (
    NonFiniteLossError,
    StepResult,
    StepSettings,
    eval_results,
    evaluate_with_metrics,
    mean_metrics,
    resolve_results,
    train_step,
)
from neox_core.training.stop_vote import StopVote
from neox_core.training.trackers import Trackers


@dataclass
class Loop:
    """Everything the loop touches, assembled by `run.setup`."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: AnnealingSchedule
    scaler: DynamicLossScaler | StaticLossScaler | None
    settings: StepSettings
    train_data: Iterator[dict[str, torch.Tensor]]
    valid_data: Iterator[dict[str, torch.Tensor]] | None
    progress: Progress
    train_iters: int
    train_batch_size: int
    seq_length: int
    log_interval: int
    eval_interval: int
    eval_iters: int
    checkpoint_factor: int | None
    extra_save_iters: list[int] | None
    flops_per_iteration: float
    peak_flops: float
    world_size: int
    trackers: Trackers
    stop: StopRequest
    save: Callable[[Progress], None] | None
    reduce_mean: Callable[[float], float]
    # (this rank's loss, stop asked here) -> (mean loss, stop asked on any rank), one collective
    reduce_step: Callable[[float, bool], tuple[float, bool]]
    log: Callable[[str], None]
    stopped: bool = False  # set when the ranks agreed to stop on a signal
    # eval_tasks: lm-evaluation-harness at eval steps (neox_core.evaluation.during_training)
    harness: Callable[[int], None] | None = None
    # time this many first steps and log them (2 when compiled: compilation, then a plain step)
    timed_first_steps: int = 0
    pipeline: object = None  # distributed.pipeline.Pipeline: per-stage times at each log
    # several processes: how deferred steps agree on stopping (run.py sets it)
    stop_vote: StopVote | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_eval(
    loop: Loop,
    prefix: str,
    data: Iterator[dict[str, torch.Tensor]] | None = None,
    chart: str = "validation",
) -> dict[str, float] | None:
    """Evaluate on `data` (default: the validation set) and print GPT-NeoX's summary."""
    is_valid = data is None
    data = loop.valid_data if is_valid else data
    if data is None or loop.eval_iters <= 0:
        return None
    # average the loss, then exponentiate (as GPT-NeoX): a mean of per-rank ppls is larger
    loss, metrics = evaluate_with_metrics(loop.model, data, loop.eval_iters, loop.settings)
    results = eval_results(loop.reduce_mean(loss))
    results.update(_reduce_metrics(loop, metrics))
    if is_valid:
        loop.progress.valid_samples_consumed += loop.eval_iters * loop.train_batch_size
    loop.log(format_eval_line(chart, prefix, results))
    loop.trackers.log({f"{chart}/{k}": v for k, v in results.items()}, loop.progress.iteration)
    return results


def _reduce_metrics(loop: Loop, metrics: dict[str, float]) -> dict[str, float]:
    """A train_impl plug-in's metrics averaged over ranks (every rank reports the same keys)."""
    return {k: loop.reduce_mean(v) for k, v in sorted(metrics.items())}


def _must_read(loop: Loop, result: StepResult, iteration: int, agreed_stop: bool) -> bool:
    """Whether the loop reads the step's results now: every step unless they are deferred.

    A deferred step of several processes reads on the stop all ranks agreed on, not on this
    rank's own request: each rank must read (and so all-reduce, save, stop) at the same steps.
    """
    asked = agreed_stop if result.reduced else loop.stop.requested
    if not result.pending or asked or iteration >= loop.train_iters:
        return True
    if iteration % loop.log_interval == 0 or iteration <= loop.timed_first_steps:
        return True
    if loop.eval_interval and iteration % loop.eval_interval == 0:
        return True
    return loop.save is not None and is_save_iteration(
        iteration, loop.checkpoint_factor, loop.extra_save_iters
    )


def _take_back_skipped(loop: Loop, results: list[StepResult]) -> None:
    """Deferred steps advanced the schedule before their finite check was read: undo skips."""
    skipped = sum(1 for r in results if r.skipped)
    if skipped:
        loop.schedule.num_iters -= skipped
        loop.schedule.apply(loop.optimizer)


def train(loop: Loop) -> Progress:
    """Train until `train_iters` or a stop signal (`loop.stopped`); the caller saves at the end.

    Deferred steps (training/step.py's `defer_sync`) are read in a batch at the next log, eval,
    save or stop point; each is then booked as if read at once (same log line, same trackers).
    Under several processes they agree on stopping through `loop.stop_vote`, one step late.
    """
    p, stats = loop.progress, IntervalStats()
    interval_metrics: list[dict[str, float]] = []  # a plug-in's metrics per applied step
    waiting: list[tuple[int, float, StepResult]] = []  # (iteration, lr, deferred result)
    loop.model.train()
    _sync(loop.settings.device)
    interval_start = started = time.perf_counter()
    first_steps: list[float] = []
    while p.iteration < loop.train_iters:
        result = train_step(
            loop.model,
            loop.optimizer,
            loop.schedule,
            loop.scaler,
            loop.train_data,
            loop.settings,
            p.iteration + 1,
        )
        p.iteration += 1
        p.train_samples_consumed += loop.train_batch_size
        waiting.append((p.iteration, loop.optimizer.param_groups[0]["lr"], result))
        if len(first_steps) < loop.timed_first_steps:
            _sync(loop.settings.device)
            first_steps.append(time.perf_counter() - started)
            started = time.perf_counter()
            if len(first_steps) == loop.timed_first_steps:
                loop.log(
                    f" > compile: first step {first_steps[0]:.1f} s (with compilation), "
                    f"then {first_steps[-1]:.3f} s"
                )
        agreed_stop = False
        if result.reduced:
            if loop.stop_vote is None:
                raise RuntimeError("deferred steps of several processes need Loop.stop_vote")
            loop.stop_vote.cast(loop.stop.requested)
            agreed_stop = loop.stop_vote.agreed()
        if not _must_read(loop, result, p.iteration, agreed_stop):
            continue
        results = resolve_results([r for _, _, r in waiting])
        deferred = [r for r, (_, _, w) in zip(results, waiting, strict=True) if w.pending]
        _take_back_skipped(loop, deferred)
        stop = agreed_stop
        for (iteration, lr, waited), r in zip(waiting, results, strict=True):
            if waited.pending and r.nan and loop.settings.on_nan == "stop":
                # the step itself was skipped on the device; later ones were taken normally
                raise NonFiniteLossError(
                    f"iteration {iteration}: loss {r.loss}, gradient norm {r.grad_norm} "
                    "(on_nan: stop)"
                )
            stop = _book(loop, stats, interval_metrics, iteration, lr, r) or stop
        waiting.clear()

        if p.iteration % loop.log_interval == 0:
            _sync(loop.settings.device)
            now = time.perf_counter()
            seconds = (now - interval_start) / stats.iterations
            interval_start = now
            _log_interval(loop, stats, interval_metrics, seconds)

        # evaluate first: a checkpoint saved here must count this eval's validation samples,
        # or a resumed run would evaluate the same batch again (eval draws no random numbers)
        if loop.eval_interval and p.iteration % loop.eval_interval == 0:
            run_eval(loop, f"iteration {p.iteration}")
            if loop.harness is not None:
                loop.harness(p.iteration)
        if loop.save is not None and is_save_iteration(
            p.iteration, loop.checkpoint_factor, loop.extra_save_iters
        ):
            loop.save(p)
        if stop:
            name = loop.stop.signal_name or "a stop signal on another rank"
            loop.log(f"received {name}: stopping after iteration {p.iteration}")
            loop.stopped = True
            break
    return p


def _book(
    loop: Loop,
    stats: IntervalStats,
    interval_metrics: list[dict[str, float]],
    iteration: int,
    lr: float,
    result: StepResult,
) -> bool:
    """Count one read step and send its per-step charts; returns whether any rank asked to stop
    (a reduced step's stop is agreed by `loop.stop_vote` instead)."""
    p = loop.progress
    # every rank must leave the loop at the same step: a rank breaking alone would wait in
    # save()'s barrier while the others wait in the next step's gradient all-reduce
    if result.reduced:
        loss, stop = result.loss, False
    else:
        loss, stop = loop.reduce_step(result.loss, loop.stop.requested)
    stats.iterations += 1
    stats.skipped += int(result.skipped)
    stats.nan += int(result.nan)
    p.skipped_iterations += int(result.skipped)
    p.nan_iterations += int(result.nan)
    metrics = _reduce_metrics(loop, result.metrics)
    if not result.skipped:
        stats.loss_sum += loss
        stats.applied += 1
        interval_metrics.append(metrics)
    scale = loop.scaler.scale if loop.settings.precision == "fp16" and loop.scaler else None
    per_step = {
        "train/lm_loss": loss,
        "train/learning_rate": lr,
        "train/grad_norm": result.grad_norm,
    }
    per_step.update({f"train/{k}": v for k, v in metrics.items()})
    if scale is not None:
        per_step["train/loss_scale"] = scale
    per_step.update(result.param_stats)
    loop.trackers.log(per_step, iteration)
    return stop


def _log_interval(
    loop: Loop, stats: IntervalStats, interval_metrics: list[dict[str, float]], seconds: float
) -> None:
    """GPT-NeoX's log line and the runtime charts for the interval that just ended."""
    p = loop.progress
    lr = loop.optimizer.param_groups[0]["lr"]
    scale = loop.scaler.scale if loop.settings.precision == "fp16" and loop.scaler else None
    avg = stats.loss_sum / max(1, stats.applied)  # GPT-NeoX: skipped steps left out
    loop.log(
        format_train_line(
            iteration=p.iteration,
            train_iters=loop.train_iters,
            seconds_per_iteration=seconds,
            samples_per_iteration=loop.train_batch_size,
            tokens_per_iteration=loop.train_batch_size * loop.seq_length,
            learning_rate=lr,
            flops_per_iteration=loop.flops_per_iteration,
            world_size=loop.world_size,
            peak_flops=loop.peak_flops,
            losses={"lm_loss": avg, **mean_metrics(interval_metrics)},
            loss_scale=scale,
            skipped_iterations=stats.skipped,
            nan_iterations=stats.nan,
        )
    )
    flops = loop.flops_per_iteration / seconds / loop.world_size
    loop.trackers.log(
        {
            "runtime/samples_per_sec": loop.train_batch_size / seconds,
            "runtime/tokens_per_sec": loop.train_batch_size * loop.seq_length / seconds,
            "runtime/flops_per_sec_per_gpu": flops,
            "runtime/mfu": flops / loop.peak_flops,
            "runtime/iteration_time": seconds,
        },
        p.iteration,
    )
    stats.reset()
    interval_metrics.clear()
    if loop.pipeline is not None:
        from neox_core.distributed.pipeline import log_stage_times

        log_stage_times(loop.pipeline, loop.log, loop.trackers, p.iteration)
