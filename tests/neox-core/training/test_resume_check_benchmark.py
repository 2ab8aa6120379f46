"""benchmarks/resume_check.py end to end on CPU (gloo): `neox-train` saves at TP 2 x DP 2 in four
processes and resumes there, at TP 2 in two processes and in one process.

The GPU/NCCL rows (issue 20) need lent multi-GPU machines; this covers the launches, the
checkpoint's reshard on load across world sizes and the comparison the table reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


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
