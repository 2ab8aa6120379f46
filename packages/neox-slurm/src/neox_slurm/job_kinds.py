"""Job kinds: where each kind's logs go, and which kind a job SLURM lists is.

`submit --kind`, `upload-checkpoints` and `tunnel` record the kind of every job they submit;
for jobs submitted otherwise the name tells: `convert_<experiment>` and `eval_<experiment>` are
the names `upload-checkpoints` gives (the names the users' scripts used), `tunnel-*` the tunnel's.
"""

from __future__ import annotations

from pathlib import Path

from neox_slurm.profiles import Profile

_NAME_PREFIXES = (("convert_", "convert"), ("eval_", "eval"), ("tunnel-", "tunnel"))


def kind_log_dir(profile: Profile, kind: str, log_folder: Path) -> Path:
    """`kinds.<kind>.log_dir` of the profile (relative ones under LOG_FOLDER), else
    LOG_FOLDER/<kind>."""
    configured = profile.kind(kind).get("log_dir")
    if not configured:
        return log_folder / kind
    path = Path(str(configured)).expanduser()
    return path if path.is_absolute() else log_folder / path


def kind_of(job_id: str, name: str, recorded: dict[str, str]) -> str | None:
    """The kind recorded at submission, else the one the job name shows, else None."""
    if job_id in recorded:
        return recorded[job_id]
    for prefix, kind in _NAME_PREFIXES:
        if name.startswith(prefix):
            return kind
    return None
