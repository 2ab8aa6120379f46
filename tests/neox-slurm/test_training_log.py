"""Iteration lines of GPT-NeoX and neox-train, read by field name."""

from __future__ import annotations

import math
from pathlib import Path

from neox_slurm.log_files import read_all_lines, read_tail
from neox_slurm.training_log import iteration_records, last_iteration, parse_iteration_line

DATA = Path(__file__).parent / "data"

GPT_NEOX_LINE = (
    " samples/sec: 93.441 | iteration       40/     320 | elapsed time per iteration (ms): 2739.7"
    " | learning rate: 5.998E-04 | approx flops per GPU: 24.1TFLOPS | lm_loss: 8.812345E+00 |"
    " loss scale: 4096.0 | number of skipped iterations:   0 | number of nan iterations:   0 |"
)


def test_gpt_neox_line_fields() -> None:
    record = parse_iteration_line(GPT_NEOX_LINE)
    assert record is not None
    assert (record.iteration, record.total) == (40, 320)
    assert record.loss == 8.812345
    assert record.samples_per_sec == 93.441
    assert record.ms_per_iteration == 2739.7
    assert record.learning_rate == 5.998e-4
    assert record.tokens_per_sec is None
    assert record.nan_iterations == 0


def test_extra_fields_and_other_order_are_fine() -> None:
    line = (
        "iteration 7/100 | lm_loss: 3.5E+00 | tokens/s: 123456.7 | MFU: 41.0% |"
        " samples/sec: 60.280 | some future field: x"
    )
    record = parse_iteration_line(line)
    assert record is not None
    assert (record.iteration, record.total, record.loss) == (7, 100, 3.5)
    assert record.tokens_per_sec == 123456.7
    assert record.samples_per_sec == 60.28


def test_nan_loss_is_parsed_as_nan() -> None:
    record = parse_iteration_line(GPT_NEOX_LINE.replace("8.812345E+00", "NAN"))
    assert record is not None and record.loss is not None and math.isnan(record.loss)


def test_non_iteration_lines_are_ignored() -> None:
    for line in [
        "time (ms) | forward: 12.3 | backward: 40.1",
        "saving checkpoint at iteration     200 to /x",
        "iteration",
        "",
    ]:
        assert parse_iteration_line(line) is None


def test_recorded_logs_give_their_last_iteration() -> None:
    lines = read_all_lines(DATA / "gptneox_running.log")
    records = iteration_records(lines)
    assert len(records) == 150
    assert records[-1].iteration == 1500 and records[-1].total == 320000
    assert last_iteration(read_tail(DATA / "gptneox_running.log", max_bytes=4096)) == records[-1]
    done = last_iteration(read_all_lines(DATA / "neoxtrain_completed.log"))
    assert done is not None and (done.iteration, done.total) == (200, 200)
    assert done.tokens_per_sec == 124200.0


def test_read_tail_drops_the_cut_first_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i:04d}\n" for i in range(1000)))
    tail = read_tail(path, max_bytes=100, max_lines=50)
    assert tail[-1] == "line 0999"
    assert all(line.startswith("line ") and len(line) == 9 for line in tail)
    assert read_tail(path, max_lines=3) == ["line 0997", "line 0998", "line 0999"]
