"""Sparklines and the PNG plot of `neox-slurm progress`."""

from __future__ import annotations

import math
from pathlib import Path

from neox_slurm.log_files import read_all_lines
from neox_slurm.progress import plot_png, sparkline, summary
from neox_slurm.training_log import iteration_records

DATA = Path(__file__).parent / "data"


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▅▅▅"
    assert sparkline([]) == ""
    assert sparkline([1.0, math.nan, 3.0]) == "▁!█"


def test_sparkline_buckets_long_series_to_the_width() -> None:
    line = sparkline([float(i) for i in range(1000)], width=40)
    assert len(line) == 40 and line[0] == "▁" and line[-1] == "█"


def test_summary_of_a_recorded_run() -> None:
    records = iteration_records(read_all_lines(DATA / "neoxtrain_completed.log"))
    text = summary(records, width=20).splitlines()
    assert text[0] == "iteration 200/200 (100.0%)"
    assert text[1].startswith("loss ") and "first 12.64  last 7.696" in text[1]
    assert text[2].startswith("tokens/s") and "last 1.242e+05" in text[2]
    assert summary([]) == "no iteration lines in the log yet"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    records = iteration_records(read_all_lines(DATA / "gptneox_running.log"))
    out = tmp_path / "p.png"
    plot_png(records, out, title="job 1")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]
