"""Stream a job's log while it runs and learn how it ended."""

from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path
from typing import TextIO

from neox_slurm.jobs import JobRecord, query_sacct, query_squeue, scontrol_show_jobs
from neox_slurm.slurm_commands import SlurmError

FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "PREEMPTED",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


def job_state(job_id: str) -> tuple[str, int | None]:
    """(state, exit code) from the controller, or from accounting once the controller forgot."""
    try:
        row = scontrol_show_jobs(job_id).get(job_id)
    except SlurmError:
        row = None
    if row is not None:
        code, _, sig = row.get("ExitCode", "0:0").partition(":")
        exit_code = int(code) if code.isdigit() else None
        if exit_code == 0 and sig.isdigit() and int(sig) > 0:
            exit_code = 128 + int(sig)
        return row.get("JobState", "UNKNOWN").split()[0], exit_code
    records: list[JobRecord] = []
    try:
        records = query_sacct(job_ids=[job_id])
    except SlurmError:
        records = query_squeue(job_ids=[job_id])
    if not records:
        raise SlurmError(f"SLURM knows no job {job_id}")
    record = records[0]
    exit_code = record.exit_code
    if exit_code == 0 and record.exit_signal:
        exit_code = 128 + record.exit_signal
    return record.state, exit_code


def exit_status_of(state: str, exit_code: int | None) -> int:
    """The status `run --follow` returns: the job's own, or non-zero when SLURM ended it."""
    if state == "COMPLETED":
        return exit_code or 0
    if exit_code:
        return exit_code
    return 1


def follow_log(
    job_id: str,
    log: Path,
    *,
    out: TextIO = sys.stdout,
    poll: float = 0.5,
    from_start: bool = True,
) -> tuple[str, int]:
    """Print LOG as it grows until the job ends; return (final state, exit status)."""
    offset = 0
    if not from_start and log.exists():
        offset = log.stat().st_size
    last_check = 0.0
    state = "PENDING"
    exit_code: int | None = None
    # one decoder for the whole stream: a UTF-8 character cut between two reads stays whole
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        if log.exists():
            with open(log, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            if chunk:
                offset += len(chunk)
                out.write(decoder.decode(chunk))
                out.flush()
        now = time.monotonic()
        if now - last_check >= poll:
            last_check = now
            state, exit_code = job_state(job_id)
            if state in FINISHED_STATES:
                time.sleep(poll)  # let the last writes of the job land
                if log.exists():
                    with open(log, "rb") as handle:
                        handle.seek(offset)
                        rest = handle.read()
                    out.write(decoder.decode(rest, final=True))
                    out.flush()
                return state, exit_status_of(state, exit_code)
        time.sleep(min(poll, 0.25))
