"""TensorBoard and W&B (offline) receive the run's scalars when configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from neox_core.training.trackers import Trackers


def test_tensorboard_and_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard", reason="the neox-core[tensorboard] extra is not installed")
    pytest.importorskip("wandb", reason="the neox-core[wandb] extra is not installed")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "wandb").mkdir()
    t = Trackers(
        tensorboard_dir=str(tmp_path / "tb"),
        use_wandb=True,
        wandb_project="neox-test",
        wandb_group=None,
        wandb_team=None,
        wandb_mode="offline",
        config={"model": {"hidden_size": 8}},
    )
    for step in range(1, 4):
        t.log({"train/lm_loss": 1.0 / step}, step)
    t.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    runs = list((tmp_path / "wandb").rglob("offline-run-*"))
    assert runs, "no offline W&B run written"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/lm_loss")] == pytest.approx([1.0, 0.5, 1 / 3])


def test_nothing_configured_is_a_no_op() -> None:
    t = Trackers(
        tensorboard_dir=None,
        use_wandb=False,
        wandb_project="x",
        wandb_group=None,
        wandb_team=None,
        wandb_mode="online",
    )
    t.log({"a": 1.0}, 1)
    t.close()
