"""benchmarks/tokenize_throughput.py --scaling runs end to end on a tiny corpus and prints its
tables: the stage profile, the scaling rows with the tokenizer ceiling, and byte identity."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "tokenize_throughput.py"


@pytest.mark.slow
def test_scaling_mode_prints_every_table(tok_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "café",
        "東京",
        "🙂",
    ]
    lines = [
        json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(60))})
        for i in range(5000)
    ]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert corpus.stat().st_size > 1 << 20  # two byte ranges: two workers have work
    cmd = [sys.executable, str(BENCH), "--scaling", "2,1", "--corpus", str(corpus)]
    cmd += ["--tokenizer", str(tok_dir / "tokenizer.json"), "--workdir", str(tmp_path / "work")]
    cmd += ["--ceiling-mb", "0.1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "## Stage profile" in out and "main CPU" in out
    rows = {}
    for line in out.splitlines():
        m = re.match(
            r"neox-data\s+(\d+)\s+\d+\s+[\d.]+\s+([\d,]+)\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)", line
        )
        if m:
            rows[int(m.group(1))] = m.groups()
    assert set(rows) == {1, 2}, out
    assert rows[1][2] == "1.00" and rows[1][4] == "1.00"  # speed-up and raw effic. of 1 worker
    assert "outputs byte-identical (neox-data any workers, GPT-NeoX): yes" in out
    assert "GPT-NeoX preprocess_data.py: not run" in out
    assert "used fewer workers" not in out
    # nothing but the corpus and the log files are left behind
    assert not list((tmp_path / "work").glob("*.bin"))
