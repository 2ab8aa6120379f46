"""The real `neox-train` under torchrun at TP 2 x DP 2 with ZeRO 3 logs the losses of one
process with the same global batch (gloo, CPU; GPT-NeoX shape: partial rotary, parallel
residual, untied head, biases)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train

LOSS = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.* lm_loss: ([0-9.E+-]+) \|")

CONFIG = """{{
  "data-path": "{data}", "split": "90,10,0", "vocab_size": 96, "make_vocab_size_divisible_by": 64,
  "num-workers": 0, "num-layers": 2, "hidden-size": 32, "num-attention-heads": 4,
  "seq-length": 32, "max-position-embeddings": 32, "pos-emb": "rotary", "rotary-pct": 0.5,
  "no-weight-tying": true, "gpt-j-residual": true, "hidden-dropout": 0.0,
  "optimizer": {{"type": "Adam", "params": {{"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}}}},
  "min_lr": 0.0003, "lr-decay-style": "cosine", "warmup": 0.1, "weight-decay": 0.1,
  "gradient_clipping": 1.0, "train_batch_size": 4, "train_micro_batch_size_per_gpu": 1,
  "train-iters": 10, "seed": 5, "eval-interval": 10, "eval-iters": 1, "log-interval": 1
}}"""


def _losses(out: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in LOSS.finditer(out)}


@pytest.mark.slow
def test_neox_train_tp2_dp2_zero3_matches_one_process(
    tmp_path: Path, capsys, learnable_corpus
) -> None:
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(CONFIG.format(data=learnable_corpus(tmp_path)))
    assert main_train(load_config([cfg])) == 0
    single = _losses(capsys.readouterr().out)
    assert sorted(single) == list(range(1, 11))

    layout = tmp_path / "layout.yml"
    layout.write_text('{"model-parallel-size": 2, "zero_optimization": {"stage": 3}}')
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
        "-m", "neox_core.cli", str(cfg), str(layout),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert "data-parallel 2 x tensor-parallel 2, ZeRO stage 3" in run.stdout
    parallel = _losses(run.stdout)
    assert sorted(parallel) == list(range(1, 11))
    for i in single:
        assert parallel[i] == pytest.approx(single[i], rel=1e-5), i
