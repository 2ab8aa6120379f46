"""Parse the per-iteration lines that neox-train and GPT-NeoX print.

Both print ` | `-separated `name: value` fields (see megatron/logging.py); neox-train may add
fields such as tokens/s or MFU. We read fields by name, so order and extra fields do not matter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ITERATION = re.compile(r"\biteration\s+(\d+)\s*/\s*(\d+)")
_FIELD = re.compile(r"^\s*([A-Za-z][\w /()%.-]*?)\s*:\s*(\S+)")
_LOSS_NAMES = ("lm_loss", "loss")


@dataclass(frozen=True)
class IterationRecord:
    """One training log line: where the run is and how it is doing."""

    iteration: int
    total: int
    loss: float | None
    samples_per_sec: float | None
    ms_per_iteration: float | None
    tokens_per_sec: float | None
    learning_rate: float | None
    nan_iterations: int | None = None


def _number(text: str) -> float | None:
    try:
        return float(text.rstrip(","))
    except ValueError:
        return None


def _count(text: str | None) -> int | None:
    value = _number(text) if text is not None else None
    return None if value is None or not math.isfinite(value) else int(value)


def parse_iteration_line(line: str) -> IterationRecord | None:
    """The record of one log line, or None when the line is not an iteration line."""
    if "iteration" not in line:
        return None
    found = _ITERATION.search(line)
    if found is None:
        return None
    fields: dict[str, str] = {}
    for part in line.split("|"):
        match = _FIELD.match(part)
        if match:
            fields[match.group(1).strip().lower()] = match.group(2)
    loss = next((_number(fields[n]) for n in _LOSS_NAMES if n in fields), None)
    tokens = next(
        (_number(v) for k, v in fields.items() if k.startswith(("tokens/s", "tokens per sec"))),
        None,
    )
    return IterationRecord(
        iteration=int(found.group(1)),
        total=int(found.group(2)),
        loss=loss,
        samples_per_sec=_number(fields["samples/sec"]) if "samples/sec" in fields else None,
        ms_per_iteration=next(
            (_number(v) for k, v in fields.items() if k.startswith("elapsed time per iteration")),
            None,
        ),
        tokens_per_sec=tokens,
        learning_rate=_number(fields["learning rate"]) if "learning rate" in fields else None,
        nan_iterations=_count(fields.get("number of nan iterations")),
    )


def iteration_records(lines: list[str]) -> list[IterationRecord]:
    """All iteration records in log order."""
    records = []
    for line in lines:
        record = parse_iteration_line(line)
        if record is not None:
            records.append(record)
    return records


def last_iteration(lines: list[str]) -> IterationRecord | None:
    """The latest iteration record, scanning from the end (cheap on long tails)."""
    for line in reversed(lines):
        record = parse_iteration_line(line)
        if record is not None:
            return record
    return None


def is_bad_loss(value: float | None) -> bool:
    return value is not None and (math.isnan(value) or math.isinf(value))
