"""`neox-eval`: local tasks from a TP-2 checkpoint, JSON beside it, table on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from neox_core.evaluation.cli import main


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from neox_core.evaluation.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'lm_eval' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--include-path" in out.stdout


@pytest.mark.slow
def test_local_task_results_beside_the_checkpoint(
    inference_checkpoints, local_tasks, tmp_path, capsys
) -> None:
    ck = inference_checkpoints["llama"]
    prefix = tmp_path / "results" / "llama"
    extra = tmp_path / "eval.yml"
    extra.write_text(json.dumps({"eval_results_prefix": str(prefix)}))
    argv = [*ck.configs, str(extra), "--tasks", "local_mc", "local_ppl", "nope"]
    rc = main([*argv, "--include-path", str(local_tasks), "--device", "cpu", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert rc == 1  # one task failed; the others ran
    assert "local_mc" in out and "acc_norm" in out and "FAILED nope: unknown task" in out
    saved = json.loads((tmp_path / "results" / "llama_global_step0.json").read_text())
    assert set(saved["results"]) == {"local_mc", "local_ppl"}
    assert saved["failures"] == {"nope": "unknown task 'nope'"}


def test_no_tasks_is_an_error(inference_checkpoints, capsys) -> None:
    assert main([*inference_checkpoints["pythia"].configs, "--device", "cpu"]) == 2
    assert "no tasks: pass --tasks" in capsys.readouterr().err
