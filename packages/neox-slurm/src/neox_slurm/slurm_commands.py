"""Run SLURM's own commands and turn their failures into clear errors."""

from __future__ import annotations

import shutil
import subprocess

DEFAULT_TIMEOUT = 60.0


class SlurmError(RuntimeError):
    """A SLURM command is missing or failed; the message names the command and its stderr."""


def run_slurm(
    args: list[str], *, input_text: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """Stdout of a SLURM command, or SlurmError naming the command line and its stderr."""
    if shutil.which(args[0]) is None:
        raise SlurmError(f"`{args[0]}` not found on PATH: is this a SLURM login node?")
    try:
        proc = subprocess.run(
            args, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"`{' '.join(args)}` did not answer within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise SlurmError(f"`{' '.join(args)}` failed: {detail}")
    return proc.stdout


def expand_filename_pattern(
    pattern: str,
    job_id: str,
    *,
    raw_id: str = "",
    job_name: str = "",
    user: str = "",
    first_node: str = "",
) -> str:
    """Expand sbatch's `%j %x %u %A %a %N %%` filename patterns (squeue reports them raw).

    JOB_ID is SLURM's display id (`123` or `123_4` for an array task); RAW_ID the task's own id.
    """
    array_job, _, array_task = job_id.partition("_")
    values = {
        "j": raw_id or array_job,
        "x": job_name,
        "u": user,
        "A": array_job,
        "a": array_task,
        "N": first_node,
        "n": "0",
        "t": "0",
        "s": "batch",
        "%": "%",
    }
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "%" and i + 1 < len(pattern):
            j = i + 1
            while j < len(pattern) and pattern[j].isdigit():  # zero-padding width, e.g. %5j
                j += 1
            if j < len(pattern) and pattern[j] in values:
                width = int(pattern[i + 1 : j] or 0)
                value = values[pattern[j]]
                out.append(value.zfill(width) if value.isdigit() else value)
                i = j + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)
