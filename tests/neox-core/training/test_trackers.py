"""TensorBoard and W&B (offline) receive the run's scalars when configured; W&B's environment
decides what the config leaves unset; a sink that cannot start is a clear error, one that fails
mid-run is switched off with a warning while training goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neox_core.training.trackers import TrackerError, Trackers

_NO_WANDB = dict(use_wandb=False, wandb_project="x", wandb_group=None, wandb_team=None)


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A W&B environment with no credentials: HOME (netrc), WANDB_DIR and config in tmp."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    (tmp_path / "wandb").mkdir()
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    import wandb

    wandb.teardown()  # W&B reads its environment once per process: start afresh
    yield tmp_path / "wandb"
    wandb.teardown()


def test_tensorboard_and_wandb_offline(
    tmp_path: Path, wandb_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
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


def test_both_are_installed_with_neox_core() -> None:
    """GPT-NeoX users set tensorboard_dir/use_wandb: a plain `uv run` must have both."""
    from importlib.metadata import requires

    deps = " ".join(r for r in requires("neox-core") or [] if "extra ==" not in r)
    assert "tensorboard" in deps and "wandb" in deps
    import tensorboard  # noqa: F401
    import wandb  # noqa: F401


def test_wandb_mode_unset_follows_the_environment(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WANDB_MODE=offline with no API key, as W&B users run on clusters: no key needed."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    t = Trackers(
        tensorboard_dir=None,
        use_wandb=True,
        wandb_project="neox-test",
        wandb_group=None,
        wandb_team=None,
        wandb_mode=None,
    )
    t.log({"train/lm_loss": 2.0}, 1)
    t.close()
    assert list(wandb_env.rglob("offline-run-*"))


def test_wandb_that_cannot_start_is_a_clear_error(wandb_env: Path) -> None:
    with pytest.raises(TrackerError, match=r"W&B could not start.*WANDB_MODE=offline"):
        Trackers(
            tensorboard_dir=None,
            use_wandb=True,
            wandb_project="neox-test",
            wandb_group=None,
            wandb_team=None,
            wandb_mode="online",
        )


def test_tensorboard_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(TrackerError, match=r"tensorboard_dir .*a-file/tb"):
        Trackers(tensorboard_dir=str(blocker / "tb"), wandb_mode=None, **_NO_WANDB)


def test_failures_mid_run_are_reported_once_and_training_goes_on(
    tmp_path: Path, wandb_env: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    t = Trackers(
        tensorboard_dir=str(tmp_path / "tb"),
        use_wandb=True,
        wandb_project="neox-test",
        wandb_group=None,
        wandb_team=None,
    )
    t.log({"train/lm_loss": 1.0}, 1)
    wandb.finish()  # the W&B run ends under us (as when its service dies)
    t.log({"train/lm_loss": "not a number"}, 2)  # and TensorBoard cannot take this value
    t.log({"train/lm_loss": 0.5}, 3)
    t.close()
    err = capsys.readouterr().err
    assert err.count("W&B failed at iteration 2") == 1
    assert err.count("TensorBoard failed at iteration 2") == 1
    assert "training continues" in err
