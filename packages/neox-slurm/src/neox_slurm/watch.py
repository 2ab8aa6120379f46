"""`neox-slurm watch JOB`: the users' post-submit routine as one command.

Follow a fresh training job until it is clearly healthy (N iterations logged with a finite
loss), clearly not (crashed, failed, NaN/inf loss: the verdict and diagnosis `status` gives), or
silent (its log unchanged for `stale_after` seconds). Each poll is one `status JOBID`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neox_slurm.log_location import LogSettings
from neox_slurm.status_report import status_of_job
from neox_slurm.training_log import is_bad_loss, parse_iteration_line
from neox_slurm.verdict import JobStatus

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1  # crashed, failed, cancelled, NaN/inf loss, ended without an iteration
EXIT_STALE = 3
EXIT_TIMEOUT = 4
DEFAULT_ITERATIONS = 50
DEFAULT_POLL = 5.0
# Pending reasons after which SLURM will not start the job without someone changing it.
NEVER_STARTS = frozenset(
    {
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "DependencyNeverSatisfied",
        "InvalidAccount",
        "InvalidQOS",
        "JobHeldAdmin",
        "JobHeldUser",
    }
)


@dataclass(frozen=True)
class WatchResult:
    exit_code: int
    message: str
    status: JobStatus | None


class _FirstIteration:
    """The first iteration a log shows, read once, from where the last look stopped."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.offset = 0
        self.value: int | None = None

    def of(self, path: Path) -> int | None:
        if path != self.path:
            self.path, self.offset, self.value = path, 0, None
        if self.value is None:
            with open(path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
            complete = data.rfind(b"\n") + 1  # only whole lines; the rest next time
            for line in data[:complete].decode("utf-8", errors="replace").splitlines():
                record = parse_iteration_line(line)
                if record is not None:
                    self.value = record.iteration
                    break
            self.offset += complete
        return self.value


def target_iteration(first_logged: int, iterations: int) -> int:
    """The iteration to reach: N for a fresh run; for a run resumed past N (its first logged
    iteration is beyond N) N more than that first one."""
    return iterations if first_logged <= iterations else first_logged + iterations


def watch_job(
    job_id: str,
    settings: LogSettings,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    stale_after: float = 600.0,
    poll: float = DEFAULT_POLL,
    timeout: float | None = None,
    out: Callable[[str], None] = print,
) -> WatchResult:
    """Poll JOB until one of the outcomes above; see the EXIT_* codes."""
    if iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {iterations}")
    start = time.monotonic()
    running_since: float | None = None
    first = _FirstIteration()
    shown: tuple[str, int | None] | None = None
    while True:
        status = status_of_job(job_id, settings, stale_after=stale_after)
        now = time.monotonic()
        if (status.state, status.iteration) != shown:
            shown = (status.state, status.iteration)
            progress = f" iteration {status.iteration}/{status.total}" if status.iteration else ""
            loss = f" loss {status.loss:.4g}" if status.loss is not None else ""
            out(f"job {job_id}: {status.state}{progress}{loss}")
        if status.verdict == "STALE":
            return WatchResult(EXIT_STALE, f"job {job_id} is STALE: {status.diagnosis}", status)
        if not status.healthy:
            why = f": {status.diagnosis}" if status.diagnosis else ""
            return WatchResult(EXIT_UNHEALTHY, f"job {job_id} {status.verdict}{why}", status)
        reason = (status.diagnosis or "").removeprefix("waiting: ")
        if status.state == "PENDING" and reason in NEVER_STARTS:
            return WatchResult(
                EXIT_UNHEALTHY, f"job {job_id} will not start as it is: {reason}", status
            )
        if is_bad_loss(status.loss):
            return WatchResult(
                EXIT_UNHEALTHY,
                f"job {job_id} {status.state}: NaN/inf loss {status.loss} at iteration "
                f"{status.iteration}",
                status,
            )
        reached = None
        if status.log is not None and status.iteration is not None:
            first_logged = first.of(Path(status.log))
            if first_logged is not None:
                reached = status.iteration >= target_iteration(first_logged, iterations)
        if reached and status.loss is not None:
            return WatchResult(
                EXIT_HEALTHY,
                f"job {job_id} is healthy: iteration {status.iteration}/{status.total}, "
                f"loss {status.loss:.4g}",
                status,
            )
        if status.state == "COMPLETED":
            if status.iteration is not None and status.loss is not None:
                return WatchResult(
                    EXIT_HEALTHY,
                    f"job {job_id} COMPLETED at iteration {status.iteration}/{status.total}, "
                    f"loss {status.loss:.4g}",
                    status,
                )
            return WatchResult(
                EXIT_UNHEALTHY, f"job {job_id} COMPLETED without logging an iteration", status
            )
        if status.state == "RUNNING":
            running_since = running_since if running_since is not None else now
            if status.log is None and now - running_since > stale_after:
                return WatchResult(
                    EXIT_STALE,
                    f"job {job_id} is STALE: no log after {now - running_since:.0f} s running",
                    status,
                )
        if timeout is not None and now - start >= timeout:
            return WatchResult(
                EXIT_TIMEOUT,
                f"job {job_id} still {status.state} after --timeout {timeout:g} s "
                f"(iteration {status.iteration}, needs {iterations})",
                status,
            )
        time.sleep(poll)
