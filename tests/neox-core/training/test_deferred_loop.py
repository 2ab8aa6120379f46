"""The loop with deferred step results (one GPU: fused AdamW, bf16/fp32) logs what the
synced loop logs, counts a NaN step as skipped, takes it back out of the LR schedule, and
stops on it with `on_nan: stop`. Fused AdamW runs on CPU too, so this runs here."""

from __future__ import annotations

import re

import pytest
import torch

from neox_core.training.loop import Loop, train
from neox_core.training.optimizer import param_groups
from neox_core.training.schedules import build_schedule
from neox_core.training.signals import StopRequest
from neox_core.training.state import Progress
from neox_core.training.step import NonFiniteLossError, StepSettings
from neox_core.training.trackers import Trackers


class Poisonable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(32, 16)
        self.head = torch.nn.Linear(16, 32)
        self.poison = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.embed(x))
        return y * float("nan") if self.poison else y


def _run(defer: bool, on_nan: str = "skip") -> tuple[list[str], Loop]:
    model = Poisonable()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2, fused=True)
    sched = build_schedule(
        lr=1e-2, min_lr=0.0, warmup=0.0, lr_decay_iters=6, train_iters=6, decay_style="linear"
    )
    sched.apply(opt)

    def data():
        g = torch.Generator().manual_seed(0)
        for i in range(1, 100):
            model.poison = i == 4  # iteration 4's batch gives a NaN loss
            yield {"text": torch.randint(0, 32, (2, 9), generator=g)}

    lines: list[str] = []
    settings = StepSettings("fp32", 1, 1.0, on_nan, torch.device("cpu"), defer_sync=defer)
    loop = Loop(
        model=model, optimizer=opt, schedule=sched, scaler=None, settings=settings,
        train_data=data(), valid_data=None, progress=Progress(), train_iters=6,
        train_batch_size=2, seq_length=8, log_interval=3, eval_interval=0, eval_iters=0,
        checkpoint_factor=None, extra_save_iters=None, flops_per_iteration=1.0, peak_flops=1.0,
        world_size=1,
        trackers=Trackers(tensorboard_dir=None, use_wandb=False, wandb_project="x",
                          wandb_group=None, wandb_team=None),
        stop=StopRequest(), save=None, reduce_mean=lambda x: x,
        reduce_step=lambda loss, stop: (loss, stop), log=lines.append,
    )  # fmt: skip
    train(loop)
    return lines, loop


def _fields(line: str) -> str:
    """The log line without its timings."""
    return re.sub(r"(elapsed time per iteration \(ms\)|samples/sec|flops per GPU|tokens/sec per "
                  r"GPU|TFLOPS per GPU|MFU): [^|]+", "", line)  # fmt: skip


def _loss(line: str) -> float:
    return float(re.search(r"lm_loss: ([0-9.E+-]+)", line).group(1))  # type: ignore[union-attr]


def test_deferred_loop_logs_like_the_synced_loop_and_skips_the_nan_step() -> None:
    synced, loop_s = _run(defer=False)
    deferred, loop_d = _run(defer=True)
    assert len(deferred) == len(synced) == 2
    assert _fields(deferred[0]) == _fields(synced[0])  # iterations 1-3: the same numbers
    # 4-6: the NaN step 4 is skipped and counted alike; step 5 ran with the learning rate one
    # schedule step ahead (the skip was read at 6), so the loss differs in the 4th digit
    assert "number of skipped iterations:   1 | number of nan iterations:   1" in deferred[1]
    assert _fields(deferred[1]).split("lm_loss")[0] == _fields(synced[1]).split("lm_loss")[0]
    assert _loss(deferred[1]) == pytest.approx(_loss(synced[1]), rel=1e-3)
    assert _loss(deferred[1]) != _loss(synced[1])
    assert loop_d.progress.skipped_iterations == loop_d.progress.nan_iterations == 1
    assert loop_d.schedule.num_iters == loop_s.schedule.num_iters == 5  # taken back
    assert loop_d.optimizer.param_groups[0]["lr"] == loop_s.optimizer.param_groups[0]["lr"]


def test_deferred_loop_stops_on_nan_naming_the_iteration() -> None:
    with pytest.raises(NonFiniteLossError, match="iteration 4: loss nan"):
        _run(defer=True, on_nan="stop")
