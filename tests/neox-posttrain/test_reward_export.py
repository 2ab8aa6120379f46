"""A trained reward model exported by `neox-ckpt neox-to-hf` is a one-label
`*ForSequenceClassification` model that transformers loads and that scores as neox does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from posttrain_runs import EOS, pairwise_config

from neox_ckpt.cli import main as ckpt_main
from neox_core.checkpoint import load_checkpoint
from neox_core.config import load_config
from neox_core.training.run import main_train
from neox_posttrain.reward_model import RewardModel

transformers = pytest.importorskip("transformers")


def test_reward_model_exports_as_sequence_classification(tmp_path: Path, capsys) -> None:
    cfg_path = pairwise_config(tmp_path, "rm", rm_pad_token_id=94, **{"train-iters": 2})
    cfg = load_config([cfg_path])
    assert main_train(cfg) == 0
    out = tmp_path / "hf"
    args = ["neox-to-hf", "--input-dir", str(tmp_path / "ckpt"), "--output-dir", str(out)]
    assert ckpt_main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPTNeoXForSequenceClassification"]
    assert config["pad_token_id"] == 94 and len(config["id2label"]) == 1

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ours = RewardModel(cfg.model)
    load_checkpoint(tmp_path / "ckpt", model=ours, weights_only=True)
    ours.eval()
    chats = [[5, 9, 13, 17, EOS], [40, 41, 42, EOS]]  # the chat and its (first) EOS
    width = max(map(len, chats))
    ids = torch.tensor([c + [94] * (width - len(c)) for c in chats])
    with torch.no_grad():
        got = hf(ids, attention_mask=(ids != 94).long()).logits[:, 0]
        want = torch.stack([ours(torch.tensor([c]))[0, -1] for c in chats])
    assert (got - want).abs().max().item() < 1e-5
