"""Find a job's log: from SLURM first, then from the configured folder and file pattern.

SLURM knows the StdOut path of every job it still holds (`scontrol show job`) and, from 23.02,
of finished ones (`sacct` StdOut). Older accounting forgets it, so we fall back to the folder and
pattern given by flag, $NEOX_SLURM_LOG_DIR / $NEOX_SLURM_LOG_PATTERN or the profile, then to the
job's working directory with that pattern and with SLURM's own default name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from neox_slurm.jobs import JobRecord
from neox_slurm.profiles import Profile
from neox_slurm.slurm_commands import expand_filename_pattern

SLURM_DEFAULT_PATTERN = "slurm-%j.out"
SLURM_DEFAULT_ARRAY_PATTERN = "slurm-%A_%a.out"


@dataclass(frozen=True)
class LogSettings:
    """Where logs are looked for when SLURM does not say."""

    log_dir: Path | None
    pattern: str


def log_settings(
    profile: Profile, log_dir: str | None = None, pattern: str | None = None
) -> LogSettings:
    """Flag, then environment variable, then profile."""
    folder = log_dir or os.environ.get("NEOX_SLURM_LOG_DIR") or profile.log_dir
    return LogSettings(
        log_dir=Path(folder).expanduser() if folder else None,
        pattern=pattern or os.environ.get("NEOX_SLURM_LOG_PATTERN") or profile.log_pattern,
    )


def _expand(job: JobRecord, pattern: str) -> str:
    return expand_filename_pattern(
        pattern,
        job.job_id,
        raw_id=job.raw_id,
        job_name=job.name,
        user=job.user,
        first_node=job.first_node,
    )


def _reported(job: JobRecord, raw: str) -> Path | None:
    if not raw or raw in ("(null)", "None"):
        return None
    path = Path(_expand(job, raw))
    if not path.is_absolute() and job.work_dir:
        path = Path(job.work_dir) / path
    return path


def log_candidates(
    job: JobRecord,
    settings: LogSettings,
    scontrol_row: dict[str, str] | None = None,
    recorded: dict[str, Path] | None = None,
) -> list[Path]:
    """Paths where JOB's log may be, most authoritative first: what SLURM reports, what
    `neox-slurm submit` recorded (RECORDED), the configured folder, the job's working folder
    and its `logs/` (where `submit` puts logs by default)."""
    work_dir = Path(job.work_dir) if job.work_dir else None
    reported = [job.stdout]
    if scontrol_row:
        reported.append(scontrol_row.get("StdOut", ""))
    candidates = [p for raw in reported if (p := _reported(job, raw)) is not None]
    if recorded and job.raw_id in recorded:
        candidates.append(recorded[job.raw_id])
    patterns = [settings.pattern]
    if "_" in job.job_id and "%j" in settings.pattern:
        # array tasks are usually logged per task: neox-training-%A_%a.out
        patterns.append(settings.pattern.replace("%j", "%A_%a"))
    folders = [settings.log_dir, work_dir, work_dir / "logs" if work_dir else None]
    for folder in folders:
        if folder is not None:
            candidates += [folder / _expand(job, pattern) for pattern in patterns]
    if work_dir is not None:
        default = SLURM_DEFAULT_ARRAY_PATTERN if "_" in job.job_id else SLURM_DEFAULT_PATTERN
        candidates.append(work_dir / _expand(job, default))
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def find_error_log(
    job: JobRecord, stdout_log: Path | None, scontrol_row: dict[str, str] | None = None
) -> Path | None:
    """JOB's stderr file when SLURM reports one apart from its stdout (tracebacks go there)."""
    for raw in (job.stderr, (scontrol_row or {}).get("StdErr", "")):
        path = _reported(job, raw)
        if path is not None and path != stdout_log and path.is_file():
            return path
    return None


def find_log(
    job: JobRecord,
    settings: LogSettings,
    scontrol_row: dict[str, str] | None = None,
    recorded: dict[str, Path] | None = None,
) -> Path | None:
    """The first existing candidate log file of JOB, or None."""
    for path in log_candidates(job, settings, scontrol_row, recorded):
        if path.is_file():
            return path
    return None
