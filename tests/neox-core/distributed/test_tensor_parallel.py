"""Tensor and sequence parallelism (torchrun, gloo, CPU) against the same model in one process.

Each worker run checks, per variant, the logits, the vocabulary-parallel cross entropy (with
-100 labels), the loss and every gradient mapped back to the canonical layout, then 10 AdamW
steps with gradient clipping (loss and gradient norm per step, weights at the end). Numbers are
relative (see tp_parity.py); the test prints them (`-s`).

fp32 runs agree within TOL (round-off of different summation orders); `+fp64` runs put model,
batches and optimizer in float64 and must agree within TOL_FP64, which only an exact sharding
can: an error in the split (a wrong shard, a missing reduction) would show at fp32 size there.
`+bf16` runs (bf16 autocast on both sides, as neox-train's bf16 regime) agree within TOL_BF16:
bf16 matmuls round partial sums, about 1e-2 in the first step's gradients (a missing
reduction is off by tens of percent).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from neox_core.config import load_config
from neox_core.training.run import main_train
from neox_data.indexed_dataset import write_dataset

TOL = 1e-5
TOL_FP64 = 1e-12
TOL_BF16 = 3e-2


def _parity(
    torchrun, workers: Path, tmp_path: Path, nproc: int, runs: list[str], device: str = "cpu"
) -> dict[str, dict[str, float]]:
    out = tmp_path / "parity.json"
    args = ("--runs", ",".join(runs), "--out", str(out), "--device", device)
    run = torchrun(workers / "tp_parity.py", nproc, *args, cuda=device == "cuda")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    results = json.loads(out.read_text())
    assert sorted(results) == sorted(r.split(":")[0] for r in runs)
    assert all(results.values())
    for key, diffs in results.items():
        print(key, {k: f"{v:.1e}" for k, v in diffs.items()})
        if key in ("activations", "collectives"):  # ratios and counts, checked in the worker
            continue
        mods = key.split("+")
        tol = TOL_FP64 if "fp64" in mods else TOL_BF16 if "bf16" in mods else TOL
        for what, value in diffs.items():
            assert value < tol, (key, what, value)
    return results


def test_tp2_smoke(torchrun, workers: Path, tmp_path: Path) -> None:
    """TP 2 + SP, kv heads replicated (MQA), biases, tied head: one forward/backward/step; the
    same with the fused ops on (their PyTorch references here; CUDA runs the kernels); what
    crosses the TP boundaries under bf16 autocast is bf16, in as many collectives as Megatron's."""
    _parity(
        torchrun,
        workers,
        tmp_path,
        2,
        ["llama-mqa-bias-tied+sp:1", "llama-mqa-bias-tied+sp+fused:1", "collectives"],
    )


@pytest.mark.slow
def test_tp2_matches_one_process(torchrun, workers: Path, tmp_path: Path) -> None:
    _parity(
        torchrun,
        workers,
        tmp_path,
        2,
        [
            "neox-parallel-untied:10",  # partial rotary 0.25, parallel residual, biases
            "neox-sequential-tied:3",  # rotary 0.5, sequential residual, tied embeddings
            "llama-gqa:10",  # 8 heads, 2 kv heads, SwiGLU, RMSNorm
            "llama-mqa-bias-tied:3",  # TP 2 > 1 kv head: replicated as Megatron
            "llama-mha-ckpt:2",  # activation checkpointing recomputes through the collectives
            "neox-parallel-untied+sp:3",
            "llama-gqa+sp:10",
            # the same two shapes in float64: exact sharding, fp32 differences are round-off
            "llama-gqa+fp64:10",
            "neox-parallel-untied+fp64:10",
            # layers compiled (aot_eager) as `compile: true` does; failed in backward before
            # the embedding's AsyncCollectiveTensor output was waited for
            "neox-parallel-untied+compile:1",
            # bf16 autocast over fp32 weights (neox-train's bf16): the TP boundaries carry bf16
            "llama-gqa+bf16:10",
            "neox-parallel-untied+sp+bf16:10",
            "llama-mqa-bias-tied+sp+fused+bf16:3",
            # compiled TP layers with the fused rotary on a copy of the local QKV shard
            "llama-gqa+fused+bf16+compile:2",
            "dropout",  # own masks per rank on shards, checkpointing replays them
            "activations",  # saved for backward per rank: SP < TP < one process
        ],
    )


@pytest.mark.slow
def test_tp4_matches_one_process(torchrun, workers: Path, tmp_path: Path) -> None:
    _parity(
        torchrun,
        workers,
        tmp_path,
        4,
        [
            "neox-parallel-untied:10",
            "llama-gqa:10",  # TP 4 > 2 kv heads
            "neox-sequential-tied+sp:3",
        ],
    )


@pytest.mark.gpu
def test_tp_code_on_one_gpu_under_nccl(torchrun, workers: Path, tmp_path: Path) -> None:
    """The DTensor TP/SP paths and the vocabulary-parallel loss on a 1-rank NCCL mesh."""
    runs = [
        "neox-parallel-untied+sp:3",
        "llama-gqa:3",
        "llama-mqa-bias-tied+sp:3",
        # bf16 autocast: the regions' inputs cast before the boundary, the fused kernels' loss
        "llama-gqa+bf16:3",
        "llama-mqa-bias-tied+sp+fused+bf16:3",
    ]
    _parity(torchrun, workers, tmp_path, 1, runs, device="cuda")


_TRAIN_CONFIG = """\
{{
  "data-path": "{data}", "split": "90,10,0", "vocab_size": 96, "num-workers": 0,
  "num-layers": 2, "hidden-size": 32, "num-attention-heads": 4, "seq-length": 32,
  "max-position-embeddings": 32, "pos-emb": "rotary", "rotary-pct": 0.5,
  "no-weight-tying": true, "gpt-j-residual": true, "hidden-dropout": 0.0,
  "optimizer": {{"type": "Adam", "params": {{"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}}}},
  "min_lr": 0.0003, "lr-decay-style": "cosine", "warmup": 0.1, "weight-decay": 0.1,
  "gradient_clipping": 1.0, "train_micro_batch_size_per_gpu": 2,
  "gradient_accumulation_steps": 2, "train-iters": 6, "seed": 5, "eval-interval": 3,
  "eval-iters": 1, "log-interval": 1
}}
"""
_LOSS = re.compile(r"(?:lm_loss|lm_loss value): ([0-9.E+-]+) \|")


@pytest.mark.slow
def test_neox_train_tp2_sp_matches_one_process(
    torchrun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`torchrun --nproc-per-node 2 neox-train` with model_parallel_size 2 + sequence_parallel
    prints the same training and validation losses as one process (same padded vocabulary)."""
    rng = np.random.default_rng(0)
    docs = [
        ((rng.integers(0, 96) + rng.integers(1, 5) * np.arange(rng.integers(10, 60))) % 96)
        for _ in range(120)
    ]
    write_dataset(tmp_path / "corpus", [d.astype(np.uint16) for d in docs], np.uint16)
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(_TRAIN_CONFIG.format(data=tmp_path / "corpus"), encoding="utf-8")
    # GPT-NeoX pads the vocabulary to divisible_by x TP: 64 x 2 = 128 x 1 keeps the same model
    tp2 = tmp_path / "tp2.yml"
    tp2.write_text('{"model-parallel-size": 2, "sequence_parallel": true, '
                   '"make_vocab_size_divisible_by": 64}')  # fmt: skip
    assert main_train(load_config([cfg])) == 0
    single = _LOSS.findall(capsys.readouterr().out)
    run = torchrun("-m", 2, "neox_core.cli", str(cfg), str(tp2))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    double = _LOSS.findall(run.stdout)
    assert len(single) == len(double) == 6 + 2 + 1, (single, double)  # train, valid, test/final
    for a, b in zip(single, double, strict=True):
        assert float(b) == pytest.approx(float(a), rel=1e-5)
