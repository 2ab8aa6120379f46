"""`neox-train`: dry run, errors, and the hand-over to training."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

from neox_core.cli import main

ROOT = Path(__file__).resolve().parents[3]
PYTHIA = [
    str(ROOT / "examples/configs/pythia/160M.yml"),
    str(ROOT / "examples/configs/local_setup.yml"),
]


def test_dry_run_groups_values_with_sources(capsys) -> None:
    assert main([*PYTHIA, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for group in ("[model]", "[precision]", "[optimizer]", "[schedule]", "[training]", "[data]"):
        assert group in out
    line = next(x for x in out.splitlines() if x.strip().startswith("num_layers"))
    assert "12" in line and "160M.yml:10" in line
    line = next(x for x in out.splitlines() if x.strip().startswith("padded_vocab_size"))
    assert "50304" in line and "derived" in line
    assert "bias_gelu_fusion" in out  # accepted-without-effect keys are listed, not dropped


def test_help_and_config_report_do_not_import_torch() -> None:
    """`--help` and the config part of the dry run stay torch-free; only the per-rank memory
    estimate (a meta-device model, nothing allocated) imports torch."""
    code = (
        "import sys\n"
        "from neox_core.cli import build_parser, format_dry_run\n"
        "from neox_core.config import load_config\n"
        "build_parser().format_help()\n"
        f"text = format_dry_run(load_config({PYTHIA!r}), {PYTHIA!r}, memory=False)\n"
        "print('LAYOUT' if 'layout: world' in text else 'NO_LAYOUT',"
        " 'TORCH' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip().endswith("LAYOUT NO_TORCH"), out[-500:]


def test_config_error_exits_2_with_the_message(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text('{"hiden_size": 8}\n')
    assert main([*PYTHIA, str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"neox-train: error: {bad}:1: unknown key 'hiden_size'" in err
    assert "did you mean 'hidden_size'" in err


def test_without_training_module_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "neox_core.training.run", None)
    assert main(PYTHIA) == 2
    assert "training is not available" in capsys.readouterr().err


def test_training_is_handed_the_resolved_config(monkeypatch) -> None:
    calls = []
    run = types.ModuleType("neox_core.training.run")

    def main_train(cfg, args):
        calls.append((cfg.model.hidden_size, args.configs))
        return 0

    run.main_train = main_train
    monkeypatch.setitem(sys.modules, "neox_core.training.run", run)
    assert main(PYTHIA) == 0
    assert calls == [(768, PYTHIA)]
