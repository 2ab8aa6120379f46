"""benchmarks/generate.py runs end to end on tiny shapes (CPU) and prints its table last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_generate_benchmark_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "generate.py"),
            "--tiny",
            "--repeats",
            "1",
            "--batches",
            "1",
            "3",
            "--new",
            "6",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    lines = out.strip().splitlines()
    assert lines[-8].startswith("| batch | implementation | decode tokens/s |")
    assert "greedy tokens equal (of 6)" in lines[-8]
    rows = [line.split("|")[1:-1] for line in lines[-6:]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (b, impl)
        for b in ("1", "3")
        for impl in (
            "transformers dynamic cache",
            "transformers static cache (+compile on CUDA)",
            "neox KV cache, eager",
        )
    ]
    assert all("failed" not in r[2] and r[3].strip().endswith("x") for r in rows)
    assert all(r[5].strip() == "6" for r in rows)  # fp32: every row decodes HF's tokens
