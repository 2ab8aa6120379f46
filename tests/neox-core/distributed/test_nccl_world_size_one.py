"""The real `neox-train` under torchrun with NCCL on one GPU: ZeRO 1 and 3 (FSDP2 on a 1-rank
mesh) and TP 1 with the distributed code paths live, against the same config in one process.

Only a CUDA machine runs these (`-m gpu`); CPU/gloo covers the multi-rank numerics. What this
catches is the NCCL side: process-group start on a device, FSDP2/DTensor on CUDA tensors, the
sharded checkpoint writer and a clean exit of the rank.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train
from neox_data.indexed_dataset import write_dataset

pytestmark = pytest.mark.gpu

_CONFIG = """\
{{
  "data-path": "{data}", "split": "90,10,0", "vocab_size": 96, "num-workers": 0,
  "num-layers": 2, "hidden-size": 64, "num-attention-heads": 4, "seq-length": 64,
  "max-position-embeddings": 64, "pos-emb": "rotary", "rotary-pct": 0.5,
  "no-weight-tying": true, "gpt-j-residual": true, "hidden-dropout": 0.0,
  "optimizer": {{"type": "Adam", "params": {{"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}}}},
  "min_lr": 0.0003, "lr-decay-style": "cosine", "warmup": 0.1, "weight-decay": 0.1,
  "gradient_clipping": 1.0, "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 2, "train-iters": 6, "seed": 5, "eval-interval": 3,
  "eval-iters": 1, "log-interval": 1, "save": "{save}", "save-interval": 6
}}
"""
_LOSS = re.compile(r"(?:lm_loss|lm_loss value): ([0-9.E+-]+) \|")


def _corpus(path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = [
        ((rng.integers(0, 96) + rng.integers(1, 5) * np.arange(rng.integers(10, 120))) % 96)
        for _ in range(200)
    ]
    write_dataset(path, [d.astype(np.uint16) for d in docs], np.uint16)


@pytest.mark.parametrize("zero", [1, 3])
def test_neox_train_on_one_gpu_under_nccl_matches_one_process(
    torchrun, tmp_path: Path, capsys: pytest.CaptureFixture[str], zero: int
) -> None:
    _corpus(tmp_path / "corpus")
    single_cfg = tmp_path / "single.yml"
    single_cfg.write_text(_CONFIG.format(data=tmp_path / "corpus", save=tmp_path / "single"))
    assert main_train(load_config([single_cfg])) == 0
    single = _LOSS.findall(capsys.readouterr().out)

    cfg = tmp_path / "nccl.yml"
    cfg.write_text(_CONFIG.format(data=tmp_path / "corpus", save=tmp_path / "nccl"))
    layout = tmp_path / "layout.yml"
    layout.write_text(f'{{"zero_optimization": {{"stage": {zero}}}, "model-parallel-size": 1}}')
    run = torchrun("-m", 1, "neox_core.cli", str(cfg), str(layout), cuda=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    double = _LOSS.findall(run.stdout)
    assert len(single) == len(double) == 6 + 2 + 1, (single, double)
    for a, b in zip(single, double, strict=True):
        # same GPU, same kernels; FSDP2's reduce and flat buffers may reorder fp32 sums
        assert float(b) == pytest.approx(float(a), rel=1e-4)
    assert (tmp_path / "nccl" / "latest").read_text().strip() == "global_step6"


def test_more_torchrun_processes_than_gpus_is_a_launch_error() -> None:
    """Two processes on one visible GPU would share it and NCCL would fail deep in its first
    collective ("invalid usage"); neox-train says so before the process group."""
    import torch

    from neox_core.training.launch import LaunchEnv, LaunchError, pick_device

    n = torch.cuda.device_count()
    launch = LaunchEnv(rank=0, world_size=n + 1, local_rank=0, master_addr=None, master_port=None)
    with pytest.raises(LaunchError, match=rf"{n + 1} processes on this node .* {n} CUDA"):
        pick_device(launch, {"LOCAL_WORLD_SIZE": str(n + 1)})
    # srun with one GPU per task: each process sees its own GPU as cuda:0
    srun = LaunchEnv(rank=3, world_size=4, local_rank=3, master_addr=None, master_port=None)
    assert pick_device(srun, {}).index == 3 % n
