"""GPT-NeoX's post-training config shapes (llama3-8b SFT, DPO, KTO, RM, written out in
`gpt_neox_configs/`) dry-run with no error other than unavailable paths.

The model file carries GPT-NeoX's settings as they are, including three that other work
owns and that are not post-training keys: `model_parallel_size: 4` (tensor parallelism, on
its own branch), `fp32_allreduce: true` and a `data_types` block. `PENDING` sets those to
values neox runs today; the test checks that with it the only error left is the missing
tokenizer file (an unavailable path), and that the post-training keys themselves resolve.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neox_core.cli import main as neox_train
from neox_core.config import load_config

HERE = Path(__file__).resolve().parent / "gpt_neox_configs"
PENDING = {"model_parallel_size": 1, "fp32_allreduce": False, "data_types": None}


@pytest.fixture
def pending(tmp_path: Path) -> Path:
    path = tmp_path / "pending.yml"
    path.write_text(json.dumps(PENDING), encoding="utf-8")
    return path


@pytest.mark.parametrize("run", ["sft", "dpo", "kto", "rm"])
def test_dry_run_fails_only_on_unavailable_paths(run: str, pending: Path, capsys) -> None:
    files = [str(HERE / "llama3-8b.yml"), str(HERE / f"{run}.yml"), str(pending)]
    assert neox_train([*files, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cannot size the vocabulary" in err and "tokenizer.json" in err, err


@pytest.mark.parametrize("run", ["sft", "dpo", "kto", "rm"])
def test_post_training_keys_resolve(run: str, pending: Path, tmp_path: Path, capsys) -> None:
    vocab = tmp_path / "vocab.yml"
    vocab.write_text(json.dumps({"vocab_size": 128256}), encoding="utf-8")
    files = [HERE / "llama3-8b.yml", HERE / f"{run}.yml", pending, vocab]
    assert neox_train([*map(str, files), "--dry-run"]) == 0
    assert "parameters: 8,030,261,248" in capsys.readouterr().out
    pt = load_config(files).posttrain
    assert pt.train_impl == {"sft": "normal"}.get(run, run)
    if run == "dpo":
        assert pt.dpo_beta == 0.01 and pt.dpo_fp32 and pt.dataset_impl == "pairwise"
        assert pt.neg_valid_label_data_paths == [
            "data/pairwise/llama3_dpo_val_rejected_label_document"
        ]
    if run == "kto":
        assert pt.kto_beta == 0.1 and pt.train_reward_data_paths


def test_the_other_settings_are_what_is_pending(capsys) -> None:
    """Without PENDING the first error is one of the three settings other work owns."""
    files = [str(HERE / "llama3-8b.yml"), str(HERE / "dpo.yml")]
    assert neox_train([*files, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert any(k in err for k in PENDING), err
