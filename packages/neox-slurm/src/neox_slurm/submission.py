"""Submit a rendered script: write it beside the logs, `sbatch` it, name it after the job."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from neox_slurm.job_index import record_submission
from neox_slurm.sbatch_script import JobSpec, render_script
from neox_slurm.slurm_commands import expand_filename_pattern, run_slurm


@dataclass(frozen=True)
class Submitted:
    job_id: str
    script: Path
    log: Path


def submitting_venv() -> Path | None:
    """The virtual environment running this process, if any (to activate on compute nodes)."""
    if os.environ.get("VIRTUAL_ENV"):
        return Path(os.environ["VIRTUAL_ENV"])
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return None


def _write_atomic(path: Path, text: str, mode: int = 0o755) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_path_of(spec: JobSpec, job_id: str) -> Path:
    return spec.log_dir / expand_filename_pattern(
        spec.log_pattern, job_id, raw_id=job_id, job_name=spec.job_name
    )


def submit(spec: JobSpec) -> Submitted:
    """Write SPEC's script into its log folder, submit it and return the job id and paths."""
    text = render_script(spec)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    pending = spec.log_dir / f"{spec.job_name}.pending-{os.getpid()}.sbatch"
    _write_atomic(pending, text)
    try:
        out = run_slurm(["sbatch", "--parsable", str(pending)])
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    job_id = out.strip().split(";")[0]
    log = log_path_of(spec, job_id)
    script = log.with_suffix(".sbatch") if log.suffix else log.with_name(log.name + ".sbatch")
    os.replace(pending, script)  # SLURM keeps its own copy; ours is for reading and resubmitting
    record_submission(job_id, log, script, spec.kind)
    return Submitted(job_id=job_id, script=script, log=log)
