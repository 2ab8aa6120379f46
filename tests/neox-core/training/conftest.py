"""A small corpus and GPT-NeoX-style config for end-to-end training tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

LOSS = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.* lm_loss: ([0-9.E+-]+) \|")

CONFIG = """\
{{
  "data-path": "{data}",
  "split": "90,10,0",
  "vocab_size": 96,
  "num-workers": 0,
  "num-layers": 2,
  "hidden-size": 32,
  "num-attention-heads": 4,
  "seq-length": 32,
  "max-position-embeddings": 32,
  "pos-emb": "rotary",
  "rotary-pct": 0.5,
  "no-weight-tying": true,
  "gpt-j-residual": true,
  "hidden-dropout": 0.1,
  "optimizer": {{"type": "Adam", "params": {{"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}}}},
  "min_lr": 0.0003,
  "lr-decay-style": "cosine",
  "warmup": 0.1,
  "weight-decay": 0.1,
  "gradient_clipping": 1.0,
  "train_micro_batch_size_per_gpu": 2,
  "gradient_accumulation_steps": 2,
  "train-iters": 8,
  "seed": 5,
  "eval-interval": 4,
  "eval-iters": 1,
  "log-interval": 1,
  "save": "{save}",
  "checkpoint-factor": 4,
}}
"""


def _losses_in(output: str) -> dict[int, str]:
    """iteration -> lm_loss as printed (compared as text: bit-for-bit at 6 digits)."""
    return {int(m.group(1)): m.group(2) for m in LOSS.finditer(output)}


@pytest.fixture
def losses_in():
    return _losses_in


@pytest.fixture
def tiny_config(tmp_path: Path, learnable_corpus) -> Path:
    learnable_corpus(tmp_path)
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(
        CONFIG.format(data=tmp_path / "corpus_text_document", save=tmp_path / "ckpt"),
        encoding="utf-8",
    )
    return cfg
