"""Through the real `neox-train`: a damaged dataset stops the run at start-up (exit 2, one
line), and a resume checks the data position and the data config against the checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NEOX_TRAIN = str(Path(sys.executable).parent / "neox-train")


def _neox_train(*configs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEOX_TRAIN, *map(str, configs)], capture_output=True, text=True, timeout=300
    )


def _extra(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow  # a neox-train process (torch import, model build): 15-30 s here
def test_truncated_bin_is_one_line_and_exit_2(tiny_config: Path, tmp_path: Path) -> None:
    bin_ = tmp_path / "corpus_text_document.bin"
    bin_.write_bytes(bin_.read_bytes()[:-7])
    proc = _neox_train(tiny_config)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"neox-train: error: data_path: {bin_}: ")
    assert "truncated" in errors[0] and "Traceback" not in proc.stderr
    assert " > training ..." not in proc.stdout


@pytest.mark.slow  # four neox-train processes, each importing torch: 85-150 s on a shared CPU
def test_resume_checks_data_position_and_config(tiny_config: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    four = _extra(tmp_path, "four.yml", '{"train-iters": 4, "lr-decay-iters": 8}\n')
    first = _neox_train(tiny_config, four)
    assert first.returncode == 0, first.stderr
    state = json.loads((ckpt / "global_step4" / "trainer_state.json").read_text())
    assert state["data"]["train_samples_consumed"] == 16
    assert state["data"]["train_batch_size"] == 4
    assert state["data"]["config"]["seq_length"] == 32
    assert len(state["data"]["config_fingerprint"]) == 16

    moved = tmp_path / "moved_text_document"
    for ext in (".bin", ".idx"):
        shutil.copy(tmp_path / f"corpus_text_document{ext}", f"{moved}{ext}")
    changed = _extra(
        tmp_path,
        "changed.yml",
        f'{{"train-iters": 6, "lr-decay-iters": 8, "load": "{ckpt}",\n'
        f' "seq-length": 16, "data-path": "{moved}", "save": "{tmp_path / "again"}"}}\n',
    )
    refused = _neox_train(tiny_config, changed)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    errors = refused.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in refused.stderr
    line = errors[0]
    assert f"{ckpt / 'global_step4'}/trainer_state.json: the data config differs" in line
    assert f"data_path '{tmp_path / 'corpus_text_document'}' -> '{moved}' ({changed}:2)" in line
    assert f"seq_length 32 -> 16 ({changed}:2)" in line
    assert "allow_data_config_change: true" in line
    assert " > data: resuming after 16 train samples consumed" in refused.stdout

    allow = _extra(tmp_path, "allow.yml", '{"allow_data_config_change": true}\n')
    resumed = _neox_train(tiny_config, changed, allow)
    assert resumed.returncode == 0, resumed.stderr
    assert " > data: resuming after 16 train samples consumed (4 validation samples)" in (
        resumed.stdout
    )
    assert "config changed since the checkpoint (allowed by allow_data_config_change" in (
        resumed.stdout
    )
    assert "iteration        6/       6" in resumed.stdout
    again = json.loads((tmp_path / "again" / "global_step6" / "trainer_state.json").read_text())
    assert again["data"]["train_samples_consumed"] == 24
    assert again["data"]["config"]["seq_length"] == 16

    finetune = _extra(
        tmp_path, "finetune.yml", f'{{"finetune": true, "save": "{tmp_path / "ft"}"}}\n'
    )
    tuned = _neox_train(tiny_config, changed, finetune)
    assert tuned.returncode == 0, tuned.stderr
    assert "(finetune: starting at iteration 0)" in tuned.stdout
    assert " > data:" not in tuned.stdout  # the data starts at 0: nothing to compare
