"""`eval_tasks` during training: the harness runs at eval steps and leaves training unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny" / "config.yml"
LOSS = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.* lm_loss: ([0-9.E+-]+) \|")


def _train(tmp: Path, capsys, **extra) -> tuple[str, dict[int, str]]:
    overrides = {
        "train_iters": 4,
        "eval_interval": 2,
        "eval_iters": 1,
        "log_interval": 1,
        "train_micro_batch_size_per_gpu": 2,
        "hidden_dropout": 0.1,  # draws random numbers: an RNG disturbed by the harness shows
        "save": str(tmp / "ckpt"),
        "checkpoint_factor": 100,
        "keep_last_n_checkpoints": None,
        **extra,
    }
    assert main_train(load_config([str(TINY)], overrides)) == 0
    out = capsys.readouterr().out
    return out, {int(m.group(1)): m.group(2) for m in LOSS.finditer(out)}


@pytest.mark.slow
def test_harness_runs_at_eval_steps_and_training_is_unchanged(tmp_path, capsys, local_tasks):
    _, plain = _train(tmp_path / "plain", capsys)
    out, with_eval = _train(
        tmp_path / "eval",
        capsys,
        eval_tasks=["local_mc", "no_such_task"],
        eval_include_path=str(local_tasks),
        eval_results_prefix="harness",
    )
    assert with_eval == plain and len(plain) == 4
    assert out.count("Running evaluation harness") == 2
    assert "eval_tasks: task no_such_task failed: unknown task 'no_such_task'" in out
    assert "eval/local_mc/acc" in out
    for step in (2, 4):
        saved = json.loads(
            (tmp_path / "eval" / "ckpt" / f"harness_global_step{step}.json").read_text()
        )
        assert 0 <= saved["results"]["local_mc"]["acc,none"] <= 1
        assert saved["failures"] == {"no_such_task": "unknown task 'no_such_task'"}
