"""Stopped after step k and resumed, a run's losses equal the uninterrupted run's bit for bit
(CPU); `finetune` loads weights only; the same seed gives the same run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train
from neox_core.training.schedules import lr_at


def _train(cfg: Path, capsys: pytest.CaptureFixture[str], **overrides) -> str:
    assert main_train(load_config([cfg], overrides)) == 0
    return capsys.readouterr().out


VALID = re.compile(r"validation results at (.+?) \| lm_loss value: (\S+) \|")


def _valid_in(output: str) -> dict[str, str]:
    """where the validation ran -> lm_loss as printed."""
    return {m.group(1): m.group(2) for m in VALID.finditer(output)}


def test_resume_is_bit_exact_and_same_seed_same_run(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    full_out = _train(tiny_config, capsys)
    full = losses_in(full_out)
    assert sorted(full) == list(range(1, 9))
    full_valid = _valid_in(full_out)
    assert set(full_valid) == {"iteration 4", "iteration 8", "the end of training for val data"}
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "latest").read_text().strip() == "global_step8"
    state = json.loads((ckpt / "global_step4" / "trainer_state.json").read_text())
    assert state["data"]["train_samples_consumed"] == 4 * 4
    assert state["data"]["valid_samples_consumed"] == 1 * 4  # the eval at 4 is counted
    assert state["scheduler"]["num_iters"] == 4

    resumed_out = _train(
        tiny_config, capsys, load=str(ckpt), iteration=4, save=str(tmp_path / "again")
    )
    assert "resumed from" in resumed_out
    resumed = losses_in(resumed_out)
    assert sorted(resumed) == [5, 6, 7, 8]
    assert {i: full[i] for i in resumed} == resumed
    resumed_valid = _valid_in(resumed_out)
    assert set(resumed_valid) == {"iteration 8", "the end of training for val data"}
    assert {k: full_valid[k] for k in resumed_valid} == resumed_valid

    again = losses_in(_train(tiny_config, capsys, save=str(tmp_path / "third")))
    assert again == full


def test_resume_uses_the_configured_schedule_and_logs_what_changed(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(tiny_config, capsys, train_iters=4)
    out = _train(
        tiny_config,
        capsys,
        load=str(tmp_path / "ckpt"),
        train_iters=6,
        min_lr=0.0001,
        lr_decay_style="linear",
        save=str(tmp_path / "more"),
    )
    line = next(x for x in out.splitlines() if "lr schedule" in x)
    assert "min_lr 0.0003 -> 0.0001" in line and "end_iter 4 -> 6" in line
    assert "decay_style 'cosine' -> 'linear'" in line and "start_lr" not in line
    lr5 = re.search(r"iteration\s+5/\s*6 \|.* learning rate: (\S+) \|", out)
    assert lr5 is not None, out
    # the line shows the LR after iteration 5's scheduler step, on the configured schedule
    # (the checkpoint's cosine over 4 steps would be at its minimum, 3E-4)
    expected = lr_at(
        5, start_lr=0.003, min_lr=0.0001, warmup_iter=0.6, end_iter=6, decay_style="linear"
    )
    assert float(lr5.group(1)) == pytest.approx(expected, rel=1e-3)


def test_finetune_loads_weights_only(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    _train(tiny_config, capsys, train_iters=4)
    out = _train(
        tiny_config,
        capsys,
        load=str(tmp_path / "ckpt"),
        finetune=True,
        train_iters=2,
        save=str(tmp_path / "ft"),
    )
    assert "finetune: starting at iteration 0" in out
    assert sorted(losses_in(out)) == [1, 2]  # counted from 0 again
    fresh = losses_in(_train(tiny_config, capsys, train_iters=2, save=str(tmp_path / "x")))
    assert float(losses_in(out)[1]) < float(fresh[1])  # started from the trained weights


def test_missing_checkpoint_starts_fresh_but_a_named_iteration_must_exist(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    out = _train(tiny_config, capsys, train_iters=1, load=str(tmp_path / "empty"))
    assert "no checkpoint in" in out
    rc = main_train(load_config([tiny_config], {"load": str(tmp_path / "ckpt"), "iteration": 3}))
    err = capsys.readouterr().err
    assert rc == 2 and "available" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("block", "scale_shown"),
    [
        ('{"precision": "bfloat16"}', False),
        (
            '{"fp16": {"enabled": true, "loss_scale": 0, "initial_scale_power": 12, '
            '"loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}}',
            True,
        ),
    ],
)
def test_mixed_precision_runs_train(
    tiny_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    losses_in,
    block: str,
    scale_shown: bool,
) -> None:
    extra = tmp_path / "precision.yml"
    extra.write_text(block)
    assert main_train(load_config([tiny_config, extra], {"train_iters": 4})) == 0
    out = capsys.readouterr().out
    losses = losses_in(out)
    assert sorted(losses) == [1, 2, 3, 4]
    assert ("loss scale: 4096.0" in out) == scale_shown
    state = json.loads((tmp_path / "ckpt" / "global_step4" / "trainer_state.json").read_text())
    assert (state["loss_scaler"] is not None) == scale_shown


def test_log_interval_averages_and_tensorboard(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], losses_in
) -> None:
    pytest.importorskip("tensorboard", reason="the neox-core[tensorboard] extra is not installed")
    every = losses_in(_train(tiny_config, capsys, save=str(tmp_path / "a"), extra_save_iters=[6]))
    tb = tmp_path / "tb"
    out = _train(
        tiny_config, capsys, log_interval=4, tensorboard_dir=str(tb), save=str(tmp_path / "b")
    )
    grouped = losses_in(out)
    assert sorted(grouped) == [4, 8]
    for end in (4, 8):
        mean = sum(float(every[i]) for i in range(end - 3, end + 1)) / 4
        assert float(grouped[end]) == pytest.approx(mean, rel=1e-6)
    # resumed at 6 with log_interval 4: the line at 8 averages iterations 7 and 8 only
    out = _train(
        tiny_config,
        capsys,
        log_interval=4,
        load=str(tmp_path / "a"),
        iteration=6,
        save=str(tmp_path / "c"),
    )
    resumed = losses_in(out)
    assert sorted(resumed) == [8]
    assert float(resumed[8]) == pytest.approx((float(every[7]) + float(every[8])) / 2, rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/lm_loss", "train/learning_rate", "runtime/mfu", "validation/lm_loss"} <= tags
    assert [e.step for e in acc.Scalars("train/lm_loss")] == list(range(1, 9))
