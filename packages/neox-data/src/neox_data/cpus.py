"""How many CPUs this process was given: the default for `--workers`.

On a compute node the job's share matters, not the node's size: SLURM confines a task to
its CPUs with an affinity mask or cpuset (read through `sched_getaffinity`), states the
per-task count in `SLURM_CPUS_PER_TASK`, and containers may cap CPU time with a cgroup
quota. The smallest of these is the answer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs allowed by a cgroup v2 `cpu.max` quota (None: no quota)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def allocated_cpus(environ: dict[str, str] | None = None) -> int:
    """The CPUs this process may use: affinity, SLURM's per-task count, cgroup quota."""
    env = os.environ if environ is None else environ
    try:
        counts = [len(os.sched_getaffinity(0))]
    except AttributeError:  # not Linux
        counts = [os.cpu_count() or 1]
    per_task = env.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        counts.append(int(per_task))
    elif env.get("SLURM_JOB_ID") and env.get("SLURM_NTASKS", "1") == "1":
        on_node = env.get("SLURM_CPUS_ON_NODE", "")  # a single task owns the job's CPUs
        if on_node.isdigit() and int(on_node) > 0:
            counts.append(int(on_node))
    quota = _cgroup_quota()
    if quota is not None:
        counts.append(quota)
    return max(1, min(counts))
