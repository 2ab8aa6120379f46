"""A record of the jobs this user submitted with neox-slurm and where their logs go.

SLURM before 23.02 forgets a finished job's StdOut once the controller drops it (MinJobAge), so
`submit` and `run` append `job id, log, script` here; `status`, `logs` and `progress` look there
before falling back to folder and pattern. One line per job, appended with O_APPEND.
"""

from __future__ import annotations

import os
from pathlib import Path


def index_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "neox-slurm" / "submitted.tsv"


def record_submission(job_id: str, log: Path, script: Path) -> None:
    """Append one line; a failure to record never fails the submission itself."""
    path = index_path()
    line = f"{job_id}\t{log}\t{script}\n".encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one small write to an O_APPEND file lands whole
        finally:
            os.close(fd)
    except OSError:
        pass


def recorded_logs() -> dict[str, Path]:
    """{job id: log path} of every recorded submission (the latest line wins)."""
    try:
        text = index_path().read_text(errors="replace")
    except OSError:
        return {}
    logs: dict[str, Path] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0]:
            logs[parts[0]] = Path(parts[1])
    return logs
