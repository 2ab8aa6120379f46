"""LR schedules against GPT-NeoX's AnnealingLR formulas, and the fp16 loss scaler."""

from __future__ import annotations

import math

import pytest
import torch

from neox_core.training.precision import DynamicLossScaler, LossScaleAtMinimumError
from neox_core.training.schedules import AnnealingSchedule, build_schedule, lr_at


def _gpt_neox_get_lr(n, start, min_lr, warmup_iter, end_iter, style):
    """GPT-NeoX's `AnnealingLR.get_lr` transcribed as plainly as possible (the oracle)."""
    if warmup_iter > 0 and n <= warmup_iter:
        return float(start) * n / warmup_iter
    n = n - warmup_iter
    end_ = end_iter - warmup_iter
    if style == "linear":
        lr = start * (end_ - n) / end_
    elif style == "cosine":
        lr = min_lr + (start - min_lr) / 2.0 * (math.cos(math.pi * n / end_) + 1)
    elif style == "exponential":
        lr = start * math.exp(-0.693 * n / end_)
    else:
        lr = start
    return max(lr, min_lr)


@pytest.mark.parametrize("style", ["linear", "cosine", "constant", "exponential"])
@pytest.mark.parametrize("warmup", [0.0, 0.01, 0.1, 0.333])
def test_matches_gpt_neox_within_the_decay_window(style: str, warmup: float) -> None:
    s = build_schedule(
        lr=6e-4,
        min_lr=6e-5,
        warmup=warmup,
        lr_decay_iters=None,
        train_iters=300,
        decay_style=style,
    )
    assert s.warmup_iter == warmup * 300  # fractional warmup iterations, as GPT-NeoX
    for n in range(0, 301):
        expected = _gpt_neox_get_lr(n, 6e-4, 6e-5, warmup * 300, 300, style)
        assert (
            lr_at(
                n,
                start_lr=6e-4,
                min_lr=6e-5,
                warmup_iter=s.warmup_iter,
                end_iter=300,
                decay_style=style,
            )
            == expected
        ), n


def test_known_values() -> None:
    kw = dict(start_lr=1.0, min_lr=0.1, warmup_iter=10, end_iter=110)
    assert lr_at(0, decay_style="cosine", **kw) == 0.0
    assert lr_at(5, decay_style="cosine", **kw) == 0.5  # warmup ignores min_lr
    assert lr_at(10, decay_style="cosine", **kw) == 1.0
    assert lr_at(60, decay_style="cosine", **kw) == pytest.approx(0.55)
    assert lr_at(110, decay_style="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(60, decay_style="linear", **kw) == pytest.approx(0.5)
    assert lr_at(105, decay_style="linear", **kw) == pytest.approx(0.1)  # clamped to min_lr
    # past lr_decay_iters: stays at the end value (GPT-NeoX's cosine would rise again)
    assert lr_at(200, decay_style="cosine", **kw) == pytest.approx(0.1)
    # inverse square root (Megatron-LM): lr * sqrt(warmup) / sqrt(n)
    assert lr_at(40, decay_style="inverse_sqrt", **kw) == pytest.approx(math.sqrt(10 / 40))
    assert lr_at(1000, decay_style="inverse_sqrt", **kw) == pytest.approx(0.1)


def test_steps_set_the_optimizer_lr_and_state_round_trips() -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=123.0)
    s = build_schedule(
        lr=1.0, min_lr=0.0, warmup=0.1, lr_decay_iters=100, train_iters=50, decay_style="linear"
    )
    assert s.end_iter == 100 and s.apply(opt) == 0.0 and opt.param_groups[0]["lr"] == 0.0
    for _ in range(7):
        s.step(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.7)
    same = AnnealingSchedule(1.0, 0.0, 10.0, 100, "linear")
    assert same.load_state_dict(s.state_dict()) == []
    assert same == s


def test_resume_takes_the_step_count_and_keeps_the_configured_schedule() -> None:
    saved = AnnealingSchedule(1.0, 0.0, 10.0, 100, "linear", num_iters=60)
    configured = AnnealingSchedule(2.0, 0.1, 10.0, 200, "cosine")
    changed = configured.load_state_dict(saved.state_dict())
    assert changed == [
        "start_lr 1.0 -> 2.0",
        "min_lr 0.0 -> 0.1",
        "end_iter 100 -> 200",
        "decay_style 'linear' -> 'cosine'",
    ]
    assert configured == AnnealingSchedule(2.0, 0.1, 10.0, 200, "cosine", num_iters=60)
    expected = lr_at(
        60, start_lr=2.0, min_lr=0.1, warmup_iter=10.0, end_iter=200, decay_style="cosine"
    )
    assert configured.lr == pytest.approx(expected)
    with pytest.raises(ValueError, match="lr_decay_style"):
        AnnealingSchedule(1.0, 0.0, 0.0, 10, "triangle")


def test_dynamic_loss_scaler_follows_deepspeed() -> None:
    sc = DynamicLossScaler.from_config(
        initial_scale_power=4, loss_scale_window=3, hysteresis=2, min_loss_scale=2.0
    )
    trace = []
    for overflow in [True, True, False, False, False, True, True, True, True]:
        sc.update(overflow)
        trace.append(sc.scale)
    # 1st overflow is absorbed by hysteresis, the 2nd halves; the 3rd step after the last
    # overflow doubles (and restores hysteresis), which absorbs the next overflow; then the
    # scale halves down to the minimum of 2.
    assert trace == [16.0, 8.0, 8.0, 8.0, 16.0, 16.0, 8.0, 4.0, 2.0]
    with pytest.raises(LossScaleAtMinimumError):
        sc.update(True)
    restored = DynamicLossScaler(1.0)
    restored.load_state_dict(sc.state_dict())
    assert restored == sc
