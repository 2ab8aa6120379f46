"""Write the sbatch scripts: readable shell a user can inspect, edit and resubmit by hand."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from neox_slurm import __version__
from neox_slurm.profiles import Profile

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$|^(UNLIMITED|INFINITE)$")
_DEPENDENCY = re.compile(
    r"^(singleton|(after|afterok|afternotok|afterany|aftercorr|afterburstbuffer)(:\d+(_\d+)?(\+\d+)?)+)([,?].+)?$"
)


class ScriptError(ValueError):
    """A job request that cannot make a valid script; the message names the option."""


@dataclass(frozen=True)
class JobSpec:
    """Everything one job script needs; built from CLI flags over the profile's defaults."""

    job_name: str
    command: list[str]
    profile: Profile
    log_dir: Path
    log_pattern: str
    work_dir: Path
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 16
    time: str = "02:00:00"
    partition: str | None = None
    account: str | None = None
    dependency: str | None = None
    venv: Path | None = None
    launcher: str = "srun"  # srun (task per GPU), torchrun (one per node) or shell (run as is)
    checkpoint_signal: str | None = "USR1"
    checkpoint_signal_seconds: int = 600
    extra_sbatch: dict[str, str | None] = field(default_factory=dict)
    kind: str | None = None  # pretrain, convert, tunnel, ...: recorded for `status`

    def validate(self) -> None:
        if not self.command:
            raise ScriptError("no command to run")
        if self.nodes < 1:
            raise ScriptError(f"--nodes must be at least 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ScriptError(f"--gpus-per-node must be 0 or more, got {self.gpus_per_node}")
        if self.cpus_per_task < 1:
            raise ScriptError(f"--cpus-per-task must be at least 1, got {self.cpus_per_task}")
        if not _TIME.match(self.time):
            raise ScriptError(
                f"--time {self.time!r} is not a SLURM time (MM, HH:MM:SS, D-HH:MM, ...)"
            )
        if self.dependency is not None and not _DEPENDENCY.match(self.dependency):
            raise ScriptError(
                f"--dependency {self.dependency!r}: expected singleton or TYPE:JOBID[:JOBID...]"
            )
        if self.launcher not in ("srun", "torchrun", "shell"):
            raise ScriptError(f"unknown launcher {self.launcher!r}")
        if "/" in self.log_pattern:
            raise ScriptError(f"log pattern {self.log_pattern!r} must be a file name, not a path")
        if not re.match(r"^[\w.-]+$", self.job_name):
            raise ScriptError(f"job name {self.job_name!r}: use letters, digits, '.', '_', '-'")


def time_limit_seconds(text: str) -> int | None:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        parts += [0] * (3 - len(parts))  # D-HH[:MM[:SS]]
        hours, minutes, seconds = parts
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def signal_seconds(spec: JobSpec) -> int:
    """Seconds before the limit to signal; a tenth of the limit when the limit is shorter."""
    limit = time_limit_seconds(spec.time)
    if limit is not None and spec.checkpoint_signal_seconds >= limit:
        return max(1, limit // 10)
    return spec.checkpoint_signal_seconds


def _directive(option: str, value: str | None) -> str:
    """One `#SBATCH` line; sbatch splits directive values at whitespace unless double-quoted."""
    if value is None:
        return f"#SBATCH --{option}"
    if '"' in value or "\n" in value:
        raise ScriptError(f"--{option} {value!r}: a value cannot hold a double quote or newline")
    if any(c.isspace() for c in value):
        value = f'"{value}"'
    return f"#SBATCH --{option}={value}"


def directives(spec: JobSpec) -> list[str]:
    """The `#SBATCH` lines, in the order a reader expects."""
    tasks = max(spec.gpus_per_node, 1) if spec.launcher == "srun" else 1
    cpus = spec.cpus_per_task
    lines = [
        _directive("job-name", spec.job_name),
        _directive("nodes", str(spec.nodes)),
        _directive("ntasks-per-node", str(tasks)),
        _directive("cpus-per-task", str(cpus)),
    ]
    if spec.gpus_per_node > 0:
        lines.append(_directive("gpus-per-node", str(spec.gpus_per_node)))
    lines.append(_directive("time", spec.time))
    if spec.partition:
        lines.append(_directive("partition", spec.partition))
    if spec.account:
        lines.append(_directive("account", spec.account))
    if spec.dependency:
        lines.append(_directive("dependency", spec.dependency))
    log = str(spec.log_dir / spec.log_pattern)
    lines += [
        _directive("output", log),
        _directive("error", log),
        _directive("open-mode", "append"),
    ]
    if spec.checkpoint_signal and spec.launcher != "shell":
        signal = f"B:{spec.checkpoint_signal}@{signal_seconds(spec)}"
        lines += [_directive("signal", signal), _directive("requeue", None)]
    for option, value in spec.extra_sbatch.items():
        lines.append(_directive(option, value))
    return lines


def _environment(spec: JobSpec) -> list[str]:
    profile = spec.profile
    lines = [f"# Environment of profile {profile.name!r} ({profile.path})"]
    lines += [f"module load {shlex.quote(m)}" for m in profile.modules]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in profile.env.items()]
    lines += list(profile.setup)
    if spec.venv is not None:
        lines.append(f"source {shlex.quote(str(spec.venv / 'bin' / 'activate'))}")
    return lines


_RENDEZVOUS = """\
# Rendezvous on the first node of the allocation; the port is derived from the job id so two
# jobs sharing a node do not collide.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export MASTER_ADDR MASTER_PORT
echo "neox-slurm: job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES node(s) $SLURM_JOB_NODELIST," \\
  "master $MASTER_ADDR:$MASTER_PORT, restart ${SLURM_RESTART_COUNT:-0}, $(date -Is)\""""


def _torchrun_relay(signal: str | None) -> str:
    """The per-node wrapper of torchrun. SLURM delivers a step signal to every process of the
    step; torchrun would die of SIG<signal>, so it starts with the signal ignored, while its
    workers (neox-train, which installs a handler) receive it and checkpoint."""
    if not signal:
        return 'exec "$@"'
    return f"trap '' {signal}; exec \"$@\""


def _launch_line(spec: JobSpec) -> str:
    command = shlex.join(spec.command)
    if spec.launcher == "torchrun":
        relay = shlex.quote(_torchrun_relay(spec.checkpoint_signal))
        return (
            f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c {relay} neox-node torchrun"
            ' --nnodes="$SLURM_JOB_NUM_NODES"'
            f" --nproc-per-node={max(spec.gpus_per_node, 1)}"
            ' --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"'
            ' --rdzv-id="$SLURM_JOB_ID"'
            f" --no-python {command}"
        )
    tasks = max(spec.gpus_per_node, 1)
    # One task per GPU; each learns its rank the way torch.distributed expects.
    ranks = (
        "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS"
        ' LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; exec "$@"'
    )
    return (
        f"srun --kill-on-bad-exit=1 --ntasks-per-node={tasks} bash -c {shlex.quote(ranks)}"
        f" neox-task {command}"
    )


_REQUEUE = """\
# SLURM sends {signal} to this shell {seconds} s before the time limit (--signal above). Pass it
# to the launched processes, so neox-train saves a checkpoint and exits, then requeue the job:
# it restarts from that checkpoint and appends to the same log.
requeue_requested=0
on_time_limit_signal() {{
  echo "neox-slurm: SIG{signal} before the time limit: checkpoint and requeue ($(date -Is))"
  requeue_requested=1
  kill -{signal} "$launch_pid" 2>/dev/null
}}
trap on_time_limit_signal {signal}
"""

_WAIT = """\
launch_pid=$!
wait "$launch_pid"
status=$?
if [ "$requeue_requested" = 1 ]; then
  wait "$launch_pid"  # the trap interrupted the first wait: wait for the checkpoint
  status=$?
  echo "neox-slurm: training exited with status $status after the signal; requeueing"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "neox-slurm: training exited with status $status ($(date -Is))"
exit "$status\""""


def render_script(spec: JobSpec, created: datetime | None = None) -> str:
    """The complete sbatch script for SPEC."""
    spec.validate()
    created = created or datetime.now(UTC)
    head = [
        "#!/bin/bash",
        f"# Written by neox-slurm {__version__} at {created.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        f" with profile {spec.profile.name!r}"
        + (f", job kind {spec.kind!r}." if spec.kind else "."),
        "# Resubmit unchanged with: sbatch <this file>",
        *directives(spec),
        "",
        "set -o pipefail",
        f"cd {shlex.quote(str(spec.work_dir))}",
        "",
        *_environment(spec),
        "set -u  # after the environment: module and activate scripts may read unset variables",
        "",
    ]
    if spec.launcher == "shell":
        body = [
            'echo "neox-slurm run: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST ($(date -Is))"',
            shlex.join(spec.command),
        ]
        return "\n".join([*head, *body]) + "\n"
    body = [_RENDEZVOUS, ""]
    if spec.checkpoint_signal:
        body.append(_REQUEUE.format(signal=spec.checkpoint_signal, seconds=signal_seconds(spec)))
    else:
        body.append("requeue_requested=0")
    body += [_launch_line(spec) + " &", _WAIT]
    return "\n".join([*head, *body]) + "\n"
