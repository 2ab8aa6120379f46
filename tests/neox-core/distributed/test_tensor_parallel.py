"""Tensor and sequence parallelism (torchrun, gloo, CPU) against the same model in one process.

Each worker run checks, per variant, the logits, the vocabulary-parallel cross entropy (with
-100 labels), the loss and every gradient mapped back to the canonical layout, then 10 AdamW
steps with gradient clipping (loss and gradient norm per step, weights at the end). Numbers are
relative (see tp_parity.py); the test prints them (`-s`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOL = 1e-5


def _parity(
    torchrun, workers: Path, tmp_path: Path, nproc: int, runs: list[str]
) -> dict[str, dict[str, float]]:
    out = tmp_path / "parity.json"
    run = torchrun(workers / "tp_parity.py", nproc, "--runs", ",".join(runs), "--out", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    results = json.loads(out.read_text())
    assert sorted(results) == sorted(r.split(":")[0] for r in runs)
    assert all(results.values())
    for key, diffs in results.items():
        print(key, {k: f"{v:.1e}" for k, v in diffs.items()})
        if key == "activations":  # ratios, checked in the worker
            continue
        for what, value in diffs.items():
            assert value < TOL, (key, what, value)
    return results


def test_tp2_smoke(torchrun, workers: Path, tmp_path: Path) -> None:
    """TP 2 + SP, kv heads replicated (MQA), biases, tied head: one forward/backward/step."""
    _parity(torchrun, workers, tmp_path, 2, ["llama-mqa-bias-tied+sp:1"])


@pytest.mark.slow
def test_tp2_matches_one_process(torchrun, workers: Path, tmp_path: Path) -> None:
    _parity(
        torchrun,
        workers,
        tmp_path,
        2,
        [
            "neox-parallel-untied:10",  # partial rotary 0.25, parallel residual, biases
            "neox-sequential-tied:10",  # rotary 0.5, sequential residual, tied embeddings
            "llama-gqa:10",  # 8 heads, 2 kv heads, SwiGLU, RMSNorm
            "llama-mqa-bias-tied:10",  # TP 2 > 1 kv head: replicated as Megatron
            "llama-mha-ckpt:3",  # activation checkpointing recomputes through the collectives
            "neox-parallel-untied+sp:10",
            "llama-gqa+sp:10",
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
            "neox-sequential-tied:10",
            "llama-gqa:10",  # TP 4 > 2 kv heads
        ],
    )
