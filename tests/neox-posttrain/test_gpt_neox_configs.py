"""GPT-NeoX's post-training config shapes (llama3-8b SFT, DPO, KTO, RM, written out in
`gpt_neox_configs/`) dry-run with no error other than unavailable paths.

The model file carries GPT-NeoX's settings as they are (`model_parallel_size: 4`,
`fp32_allreduce: true`, a `data_types` block); the test checks that the only error left is
the missing tokenizer file (an unavailable path), and that the post-training keys resolve.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neox_core.cli import main as neox_train
from neox_core.config import load_config

HERE = Path(__file__).resolve().parent / "gpt_neox_configs"


@pytest.mark.parametrize("run", ["sft", "dpo", "kto", "rm"])
def test_dry_run_fails_only_on_unavailable_paths(run: str, capsys) -> None:
    files = [str(HERE / "llama3-8b.yml"), str(HERE / f"{run}.yml")]
    assert neox_train([*files, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cannot size the vocabulary" in err and "tokenizer.json" in err, err


@pytest.mark.parametrize("run", ["sft", "dpo", "kto", "rm"])
def test_post_training_keys_resolve(run: str, tmp_path: Path, capsys) -> None:
    vocab = tmp_path / "vocab.yml"
    vocab.write_text(json.dumps({"vocab_size": 128256}), encoding="utf-8")
    files = [HERE / "llama3-8b.yml", HERE / f"{run}.yml", vocab]
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
