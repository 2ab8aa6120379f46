"""`neox-train` / `neox-posttrain` run DPO, KTO and reward modelling through neox-core's loop.

Each run is a real training run on tiny `.bin/.idx` files: the plug-in is found through the
`neox.train_impl` entry points, TRL-named metrics reach the log line, checkpoints are neox's,
and a resumed run repeats the uninterrupted one's losses bit for bit (the frozen reference
model comes back from `<save>/reference`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from posttrain_runs import kto_config, losses_in, pairwise_config

from neox_core.config import load_config
from neox_core.training.run import main_train
from neox_posttrain.cli import main as posttrain_main


def _train(cfg: Path, capsys, **overrides) -> str:
    assert main_train(load_config([cfg], overrides)) == 0
    return capsys.readouterr().out


def test_dpo_logs_trl_metrics_and_resumes_exactly(tmp_path: Path, capsys) -> None:
    cfg = pairwise_config(tmp_path, "dpo", dpo_beta=0.5)
    full_out = _train(cfg, capsys, tensorboard_dir=str(tmp_path / "tb"))
    full = losses_in(full_out)
    assert sorted(full) == [1, 2, 3, 4]
    line = next(x for x in full_out.splitlines() if "iteration        4/" in x)
    for name in ("lm_loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
        assert f" {name}: " in line, name
    assert "rewards/margins value" in full_out  # in the validation summary too
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "reference" / "latest").is_file()
    assert (ckpt / "latest").read_text().strip() == "global_step4"

    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "tb"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        for tag in ("train/lm_loss", "train/rewards/chosen", "validation/rewards/accuracies"):
            assert tag in tags, tag
        assert len(acc.Scalars("train/rewards/margins")) == 4

    resumed_out = _train(cfg, capsys, load=str(ckpt), iteration=2, save=str(tmp_path / "again"))
    assert "reference model: loaded from" in resumed_out
    assert (tmp_path / "again" / "reference" / "latest").is_file()  # carried to the new dir
    resumed = losses_in(resumed_out)
    assert sorted(resumed) == [3, 4]
    assert resumed == {i: full[i] for i in resumed}


def test_reward_model_and_kto_train(tmp_path: Path, capsys) -> None:
    (tmp_path / "rm").mkdir()
    rm = pairwise_config(tmp_path / "rm", "rm", **{"train-iters": 2})
    out = _train(rm, capsys)
    line = next(x for x in out.splitlines() if "iteration        2/" in x)
    assert " accuracy: " in line and " margin: " in line
    (tmp_path / "kto").mkdir()
    kto = kto_config(tmp_path / "kto", **{"train-iters": 2})
    out = _train(kto, capsys)
    line = next(x for x in out.splitlines() if "iteration        2/" in x)
    assert " kl: " in line and " rewards/chosen: " in line


def test_posttrain_cli_runs_the_named_objective_and_refuses_a_mismatch(
    tmp_path: Path, capsys
) -> None:
    cfg = pairwise_config(tmp_path, "dpo", **{"train-iters": 1, "eval-interval": 1})
    assert posttrain_main(["dpo", str(cfg)]) == 0
    assert " rewards/chosen: " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="train_impl is 'dpo', but the command is 'rm'"):
        posttrain_main(["rm", str(cfg)])


def test_missing_plugin_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    """With no `neox.train_impl` entry points (neox-posttrain not installed; simulated by
    hiding the entry points, since the package cannot be uninstalled inside the test)."""
    import neox_core.training.train_impl as ti

    monkeypatch.setattr(ti, "entry_points", lambda group: [])
    cfg = pairwise_config(tmp_path, "dpo")
    assert main_train(load_config([cfg])) == 2
    err = capsys.readouterr().err
    assert "train_impl: dpo needs the neox-posttrain package" in err
    assert f"{cfg}:" in err  # names the file and line that set it


def test_cli_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from neox_posttrain.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "precompute" in out.stdout and "dpo" in out.stdout
