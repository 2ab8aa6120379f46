"""Read log files cheaply: the tail of a log is all status needs, even for 200 jobs."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 64 * 1024


def read_tail(path: Path, max_bytes: int = TAIL_BYTES, max_lines: int = 200) -> list[str]:
    """The last lines of PATH (at most MAX_LINES, read from at most MAX_BYTES)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        handle.seek(start)
        data = handle.read()
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    lines = text.split("\n")
    if start > 0:
        lines = lines[1:]  # the first line was cut in the middle
    if lines and lines[-1] == "":
        lines.pop()
    return lines[-max_lines:]


def read_all_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read().replace("\r", "\n").splitlines()
