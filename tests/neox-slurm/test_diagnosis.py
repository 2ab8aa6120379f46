"""Diagnoses read from recorded logs of each failure mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from neox_slurm.diagnosis import diagnose, shows_crash
from neox_slurm.log_files import read_tail

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("log", "kind", "needle"),
    [
        (
            "crashed_exception.log",
            "Python exception",
            "ValueError: sequence length 4096 exceeds max_position_embeddings 2048",
        ),
        ("cuda_oom.log", "CUDA out of memory", "Tried to allocate 2.00 GiB"),
        ("nccl_timeout.log", "NCCL failure", "Watchdog caught collective operation timeout"),
        ("nan_loss.log", "NaN/inf loss", "iteration 220"),
        ("time_limit.log", "SLURM time limit", "time limit"),
        ("cancelled.log", "cancelled", "CANCELLED AT 2026-11-21T10:00:12"),
    ],
)
def test_failure_logs_are_diagnosed(log: str, kind: str, needle: str) -> None:
    found = diagnose(read_tail(DATA / log))
    assert found is not None, log
    assert found.kind == kind
    assert needle in found.message


@pytest.mark.parametrize("log", ["gptneox_running.log", "neoxtrain_completed.log"])
def test_healthy_logs_have_no_diagnosis(log: str) -> None:
    lines = read_tail(DATA / log)
    assert diagnose(lines) is None
    assert not shows_crash(lines)


def test_crash_signs_follow_the_gpt_neox_convention() -> None:
    assert shows_crash(["iteration 1/2 | lm_loss: 1.0", "RuntimeError: boom", "Traceback x"])
    assert shows_crash(["slurmstepd: error: *** JOB 1 ON n CANCELLED AT x ***"])
    assert shows_crash(["Some Exception happened"])
    assert not shows_crash(["ignore_errors: False", "exceptional results", "loss 2.0"])


def test_crash_outside_the_last_100_lines_is_not_a_crash() -> None:
    lines = ["Traceback (most recent call last):", "KeyError: 'x'"] + ["fine"] * 100
    assert not shows_crash(lines)


def test_wrapped_exception_reports_the_cause_not_the_launcher() -> None:
    lines = [
        "Traceback (most recent call last):",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "Traceback (most recent call last):",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
    ]
    found = diagnose(lines)
    assert found is not None
    assert found.message == "RuntimeError: CUDA error: an illegal memory access was encountered"
