"""benchmarks/train_step.py runs end to end (tiny shapes, CPU) and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_train_step_benchmark_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--smoke"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("smoke |")]
    assert [r.split("|")[1].strip() for r in rows] == ["neox", "hf"]
    assert "MFU %" in out and "tokens/s" in out
