"""A record of the jobs this user submitted with neox-slurm and where their logs go.

SLURM before 23.02 forgets a finished job's StdOut once the controller drops it (MinJobAge), so
`submit` and `run` append `job id, log, script[, kind]` here; `status`, `logs` and `progress` look
there before falling back to folder and pattern, and `status` takes each job's kind (pretrain,
convert, tunnel, ...) from it. One line per job, appended with O_APPEND; lines of three fields
(written before kinds existed) still read.
"""

from __future__ import annotations

import os
from pathlib import Path


def index_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "neox-slurm" / "submitted.tsv"


def record_submission(job_id: str, log: Path, script: Path, kind: str | None = None) -> None:
    """Append one line; a failure to record never fails the submission itself."""
    path = index_path()
    fields = [job_id, str(log), str(script)] + ([kind] if kind else [])
    line = ("\t".join(fields) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one small write to an O_APPEND file lands whole
        finally:
            os.close(fd)
    except OSError:
        pass


def _recorded_lines() -> list[list[str]]:
    try:
        text = index_path().read_text(errors="replace")
    except OSError:
        return []
    return [parts for line in text.splitlines() if len(parts := line.split("\t")) >= 2 and parts[0]]


def recorded_logs() -> dict[str, Path]:
    """{job id: log path} of every recorded submission (the latest line wins)."""
    return {parts[0]: Path(parts[1]) for parts in _recorded_lines()}


def recorded_kinds() -> dict[str, str]:
    """{job id: kind} of the recorded submissions that named a kind."""
    return {parts[0]: parts[3] for parts in _recorded_lines() if len(parts) >= 4 and parts[3]}
