"""Gather every selected job's status in one sacct (or squeue) call and one scontrol call."""

from __future__ import annotations

import json
from collections.abc import Sequence

from neox_slurm.job_index import recorded_kinds, recorded_logs
from neox_slurm.job_kinds import kind_of
from neox_slurm.jobs import JobRecord, list_jobs, record_from_scontrol, scontrol_show_jobs
from neox_slurm.log_location import LogSettings, find_error_log, find_log
from neox_slurm.slurm_commands import SlurmError
from neox_slurm.verdict import DEFAULT_STALE_AFTER, JobStatus, classify


def statuses_of(
    records: Sequence[JobRecord],
    settings: LogSettings,
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    scontrol_rows: dict[str, dict[str, str]] | None = None,
    now: float | None = None,
) -> list[JobStatus]:
    """Classify RECORDS, finding each log from SLURM's paths or SETTINGS."""
    rows = scontrol_rows or {}
    recorded = recorded_logs()
    kinds = recorded_kinds()
    statuses = []
    for job in records:
        row = rows.get(job.raw_id)
        log = find_log(job, settings, row, recorded)
        error_log = find_error_log(job, log, row)
        status = classify(job, log, error_log, stale_after=stale_after, now=now)
        status.kind = kind_of(job.raw_id, job.name, kinds)
        statuses.append(status)
    return statuses


def collect_status(
    settings: LogSettings,
    *,
    user: str | None = None,
    all_users: bool = False,
    since: str = "now-1days",
    name_pattern: str | None = None,
    job_ids: list[str] | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    kind: str | None = None,
) -> list[JobStatus]:
    """Status of the selected jobs (only those of KIND when given), as SLURM and their logs
    tell it."""
    records = list_jobs(
        user=user, all_users=all_users, since=since, name_pattern=name_pattern, job_ids=job_ids
    )
    if kind is not None:
        kinds = recorded_kinds()
        records = [r for r in records if kind_of(r.raw_id, r.name, kinds) == kind]
    scontrol_rows: dict[str, dict[str, str]] = {}
    if any(not r.stdout for r in records):
        try:
            scontrol_rows = scontrol_show_jobs()
        except SlurmError:
            scontrol_rows = {}  # the controller is down: accounting and fallbacks still answer
    return statuses_of(records, settings, stale_after=stale_after, scontrol_rows=scontrol_rows)


def status_of_job(
    job_id: str, settings: LogSettings, *, stale_after: float = DEFAULT_STALE_AFTER
) -> JobStatus:
    """One job's status, as `neox-slurm status JOBID` gives it. The controller answers first
    (accounting lags behind a fresh job); accounting once the controller has forgotten it."""
    try:
        rows = scontrol_show_jobs(job_id)
    except SlurmError:
        rows = {}
    row = rows.get(job_id) or (next(iter(rows.values())) if len(rows) == 1 else None)
    if row is not None:
        records = [record_from_scontrol(row)]
        rows = {row["JobId"]: row}
    else:
        records = [r for r in list_jobs(job_ids=[job_id], all_users=True)
                   if job_id in (r.job_id, r.raw_id)]  # fmt: skip
        if not records:
            raise SlurmError(f"SLURM knows no job {job_id}")
    return statuses_of(records[:1], settings, stale_after=stale_after, scontrol_rows=rows)[0]


def _fmt_loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_table(statuses: Sequence[JobStatus]) -> str:
    """A fixed-width table, one row per job, the diagnosis last so it may run long."""
    header = [
        "JOBID",
        "NAME",
        "KIND",
        "STATE",
        "VERDICT",
        "ELAPSED",
        "ITER",
        "%",
        "LOSS",
        "DIAGNOSIS",
    ]
    rows = [header]
    for s in statuses:
        progress = "-" if s.iteration is None else f"{s.iteration}/{s.total}"
        percent = "-" if s.percent is None else f"{s.percent:.1f}"
        rows.append(
            [
                s.job_id,
                s.name,
                s.kind or "-",
                s.state,
                s.verdict,
                s.elapsed or "-",
                progress,
                percent,
                _fmt_loss(s.loss),
                s.diagnosis or "",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_json(statuses: Sequence[JobStatus]) -> str:
    return json.dumps([s.to_json() for s in statuses], indent=2)
