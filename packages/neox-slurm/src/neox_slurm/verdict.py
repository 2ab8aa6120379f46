"""Tell the truth about a job: SLURM's state corrected by what its log shows.

A job SLURM calls RUNNING may have crashed (a traceback in its log tail, processes hung in
teardown) or hung (log unchanged for `stale_after` seconds); finished jobs get the reason the
log gives for their end.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neox_slurm.diagnosis import CRASH_WINDOW, Diagnosis, diagnose, shows_crash
from neox_slurm.jobs import JobRecord
from neox_slurm.log_files import read_tail
from neox_slurm.training_log import last_iteration

DEFAULT_STALE_AFTER = 600.0

# States that need nobody's attention.
HEALTHY_VERDICTS = frozenset(
    {
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "REQUEUED",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "RESIZING",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "SIGNALING",
        "STAGE_OUT",
    }
)
_STATE_DIAGNOSIS = {
    "TIMEOUT": Diagnosis("SLURM time limit", "the job reached its time limit"),
    "OUT_OF_MEMORY": Diagnosis("host out of memory", "SLURM killed the job for exceeding memory"),
    "NODE_FAIL": Diagnosis("node failure", "SLURM reports a node failure"),
    "BOOT_FAIL": Diagnosis("node failure", "a node failed to boot"),
    "PREEMPTED": Diagnosis("preempted", "SLURM preempted the job"),
    "DEADLINE": Diagnosis("deadline", "the job reached its deadline"),
}


@dataclass
class JobStatus:
    """One row of `neox-slurm status`."""

    job_id: str
    name: str
    user: str
    state: str
    verdict: str
    healthy: bool
    elapsed: str
    iteration: int | None
    total: int | None
    percent: float | None
    loss: float | None
    diagnosis: str | None
    exit_code: int | None
    log: str | None
    error_log: str | None
    log_age_s: float | None
    kind: str | None = None  # pretrain, convert, eval, tunnel, ... (job_kinds.kind_of)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: Path | None, now: float) -> tuple[list[str], float | None]:
    if path is None:
        return [], None
    try:
        age = max(0.0, now - path.stat().st_mtime)
        return read_tail(path), age
    except OSError:
        return [], None


def classify(
    job: JobRecord,
    log_path: Path | None,
    error_log: Path | None = None,
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: float | None = None,
) -> JobStatus:
    """The status of JOB given its log (None when none was found) and a separate stderr file."""
    now = time.time() if now is None else now
    lines, log_age = _read(log_path, now)
    if log_age is None:
        log_path = None
    error_lines, error_age = _read(error_log, now)
    if error_age is None:
        error_log = None
    elif log_age is None or error_age < log_age:
        log_age = error_age  # either file changing shows the job is alive
    record = last_iteration(lines) or last_iteration(error_lines)
    # Both tails take part in the diagnosis: tracebacks usually go to stderr.
    lines = lines[-CRASH_WINDOW:] + error_lines[-CRASH_WINDOW:]
    window = len(lines)
    state = job.state
    verdict = state
    diagnosis: Diagnosis | None = None
    if state == "RUNNING":
        found = diagnose(lines, window) if lines else None
        if lines and (shows_crash(lines, window) or (found and found.kind == "NaN/inf loss")):
            verdict = "CRASHED"
            diagnosis = found
        elif log_age is not None and log_age > stale_after:
            verdict = "STALE"
            diagnosis = Diagnosis("stale", f"log unchanged for {_duration(log_age)}")
    elif state == "PENDING" and job.reason not in ("", "None", "(null)"):
        diagnosis = Diagnosis("waiting", job.reason)  # Resources, Priority, Dependency, ...
    elif state == "CANCELLED":
        diagnosis = diagnose(lines, window) if lines else None
        if diagnosis is None or diagnosis.kind in ("error", "task exit"):
            diagnosis = Diagnosis("cancelled", "cancelled by a user or an administrator")
    elif state in (
        "FAILED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "PREEMPTED",
        "DEADLINE",
        "COMPLETED",
    ):
        diagnosis = diagnose(lines, window) if lines else None
        generic = diagnosis is None or diagnosis.kind in ("error", "task exit")
        if state in _STATE_DIAGNOSIS and generic:
            diagnosis = _STATE_DIAGNOSIS[state]
        if state == "FAILED" and (diagnosis is None or diagnosis.kind == "task exit"):
            diagnosis = Diagnosis("exit code", f"the job exited with status {job.exit_code}")
        if state == "COMPLETED" and diagnosis is not None and generic:
            diagnosis = None  # a finished job's stray `error:` line is no diagnosis
    percent = None
    if record is not None and record.total > 0:
        percent = round(100.0 * record.iteration / record.total, 1)
    return JobStatus(
        job_id=job.job_id,
        name=job.name,
        user=job.user,
        state=state,
        verdict=verdict,
        healthy=verdict in HEALTHY_VERDICTS,
        elapsed=job.elapsed,
        iteration=record.iteration if record else None,
        total=record.total if record else None,
        percent=percent,
        loss=record.loss if record else None,
        diagnosis=str(diagnosis) if diagnosis else None,
        exit_code=job.exit_code,
        log=str(log_path) if log_path else None,
        error_log=str(error_log) if error_log else None,
        log_age_s=round(log_age, 1) if log_age is not None else None,
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
