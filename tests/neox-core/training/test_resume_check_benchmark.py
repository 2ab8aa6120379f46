"""benchmarks/resume_check.py end to end on CPU (gloo): `neox-train` saves at TP 2 x DP 2 in four
processes and resumes there, at TP 2 in two processes and in one process.

The GPU/NCCL rows (issue 20) need lent multi-GPU machines; this covers the launches, the
checkpoint's reshard on load across world sizes and the comparison the table reports.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _resume_check(monkeypatch: pytest.MonkeyPatch):
    """benchmarks/resume_check.py as a module."""
    spec = importlib.util.spec_from_file_location("resume_check", ROOT / "benchmarks" / "resume_check.py")  # fmt: skip
    rc = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports train_step.py
    sys.modules["resume_check"] = rc  # its dataclass looks its module up
    try:
        spec.loader.exec_module(rc)
    finally:
        del sys.modules["resume_check"]
    return rc


@pytest.mark.slow
def test_resume_check_smoke_resumes_at_every_layout() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "resume_check.py"), "--smoke", "--iters", "6"],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layout "))
    rows = {}
    for line in lines[start + 1 :]:
        cells = [c.strip() for c in line.split("|")]
        rows[cells[0]] = cells
    assert sorted(rows) == ["1x1", "2x2", "4x2"]
    assert rows["4x2"][1:] == ["TP 2 x DP 2 -> TP 2 x DP 2", "3", "0", "ok"]  # bit for bit
    assert rows["2x2"][1] == "TP 2 x DP 2 -> TP 2 x DP 1"
    assert rows["1x1"][1] == "TP 2 x DP 2 -> TP 1 x DP 1"
    for name in ("2x2", "1x1"):
        assert rows[name][2] == "3" and rows[name][4] == "ok", rows[name]
        assert float(rows[name][3]) <= 1e-5


def test_resume_check_gpu_configs_load_at_every_default_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU run's config (Pythia-160M in bf16 plus the layout files) loads: a key conflict
    would otherwise surface only on a lent multi-GPU machine."""
    import argparse
    import json

    from neox_core.config import load_config

    rc = _resume_check(monkeypatch)
    args = argparse.Namespace(iters=20, global_batch=16, micro_batch=4, zero=1, compile="auto",
                              smoke=False, seq=2048)  # fmt: skip
    layouts = ((4, 2), (2, 2), (1, 1))
    files = rc.base_config(args, tmp_path / "data", tmp_path, {tp for _, tp in layouts})
    padded = set()
    for _procs, tp in layouts:
        layout = tmp_path / "layout.yml"
        layout.write_text(json.dumps({"model_parallel_size": tp, "load": "ckpt", "iteration": 10}))
        cfg = load_config([*files, layout])
        assert cfg.precision.dtype == "bf16" and cfg.model.num_layers == 12
        assert (cfg.training.micro_batch_size, cfg.training.train_batch_size) == (4, 16)
        assert cfg.checkpoint.load == "ckpt"
        padded.add(cfg.model.padded_vocab_size)
    # a checkpoint saved at TP 2 loads at TP 1 only where both pad the vocabulary alike (the
    # default divisor, 128, pads 50277 to 50432 at TP 2 and 50304 at TP 1: neox-train refused)
    assert padded == {50304}


def test_resume_check_names_the_error_a_failed_run_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rc = _resume_check(monkeypatch)
    torchrun_tail = [
        "E1204 17:40:06 api.py:986] failed (exitcode: 2) local_rank: 0",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html",
        "============================================================",
    ]
    cli_error = "neox-train: error: ckpt/global_step2: embed.weight has 50432 rows"
    assert rc.failure("\n".join([" > model", cli_error, *torchrun_tail])) == cli_error
    raised = ["[rank0]: Traceback (most recent call last):", "[rank0]: ValueError: no layers"]
    assert rc.failure("\n".join([*raised, *torchrun_tail])) == "ValueError: no layers"
    assert rc.failure("one\ntwo\nthree") == "two / three"
