"""Deferred steps under several processes (gloo, CPU, DP 2): the loop logs what the synced loop
logs, every rank skips a step whose loss is NaN on one rank only, and a stop signal that
reaches one rank stops all of them at the same iteration, one step later than synced steps.
"""

from __future__ import annotations

import json
import re

import pytest


def _report(run) -> dict:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _fields(line: str) -> str:
    """The log line without its timings and its loss."""
    return re.sub(r"(elapsed time per iteration \(ms\)|samples/sec|flops per GPU|tokens/sec per "
                  r"GPU|TFLOPS per GPU|MFU|lm_loss): [^|]+", "", line)  # fmt: skip


def _loss(line: str) -> float:
    return float(re.search(r"lm_loss: ([0-9.E+-]+)", line).group(1))  # type: ignore[union-attr]


def _run(torchrun, workers, device: str, *args: str) -> dict:
    cuda = device == "cuda"
    return _report(torchrun(workers / "deferred_loop.py", 2, "--device", device, *args, cuda=cuda))


DEVICES = [
    pytest.param("cpu", marks=pytest.mark.slow),
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.multigpu]),  # NCCL, 2 GPUs
]


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_steps_at_dp2_log_skip_and_stop_together(torchrun, workers, device) -> None:
    report = _run(torchrun, workers, device, "--stop-at", "3")
    if device == "cuda":  # neox-train's launch logged which transports NCCL chose
        assert report["nccl"].startswith(" > NCCL "), report["nccl"]
        assert "links none reported" not in report["nccl"], report["nccl"]
    synced, deferred = report["synced"], report["deferred"]
    # synced: rank 1's signal during iteration 3 stops both ranks after iteration 3; deferred
    # ranks read the vote one step late: both stop after iteration 4
    assert [r[:2] for r in synced["ranks"]] == [[3, True], [3, True]]
    assert [r[:2] for r in deferred["ranks"]] == [[4, True], [4, True]]
    assert _fields(deferred["lines"][0]) == _fields(synced["lines"][0])  # iterations 1-3
    assert _loss(deferred["lines"][0]) == pytest.approx(_loss(synced["lines"][0]), rel=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_steps_at_dp2_skip_a_nan_of_one_rank_on_every_rank(
    torchrun, workers, device
) -> None:
    report = _run(torchrun, workers, device)
    synced, deferred = report["synced"], report["deferred"]
    for mode in (synced, deferred):
        assert [r[:3] for r in mode["ranks"]] == [[6, False, 1], [6, False, 1]]
        assert mode["ranks"][0][3] == mode["ranks"][1][3]  # the ranks' weights stay equal
    assert len(deferred["lines"]) == len(synced["lines"]) == 2
    for d, s in zip(deferred["lines"], synced["lines"], strict=True):
        assert _fields(d) == _fields(s)
    assert (
        "number of skipped iterations:   1 | number of nan iterations:   1" in deferred["lines"][1]
    )
    assert _loss(deferred["lines"][0]) == pytest.approx(_loss(synced["lines"][0]), rel=1e-6)
