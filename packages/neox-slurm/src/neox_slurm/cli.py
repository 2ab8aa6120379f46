"""`neox-slurm`: submit neox training to SLURM and tell the truth about each job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from neox_slurm import __version__

EXIT_UNHEALTHY = 1
EXIT_ERROR = 2


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-dir",
        help="folder of job logs when SLURM does not report them "
        "(default: $NEOX_SLURM_LOG_DIR, then the profile's log_dir)",
    )
    parser.add_argument(
        "--log-pattern",
        help="log file name with sbatch patterns, e.g. neox-training-%%j.out "
        "(default: $NEOX_SLURM_LOG_PATTERN, then the profile's log_pattern)",
    )
    parser.add_argument(
        "--profile",
        help="cluster profile name or YAML file (default: $NEOX_SLURM_PROFILE or generic)",
    )


def _add_resource_flags(parser: argparse.ArgumentParser, *, gpus_flag: str) -> None:
    parser.add_argument("--nodes", type=int, help="number of nodes")
    parser.add_argument(gpus_flag, dest="gpus", type=int, help="GPUs per node (0 for none)")
    parser.add_argument("--cpus-per-task", "--cpus", dest="cpus", type=int, help="CPUs per task")
    parser.add_argument("--time", help="time limit, e.g. 02:00:00 or 1-00:00:00")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account to charge")
    parser.add_argument("--job-name", help="job name")
    parser.add_argument(
        "--dependency", help="singleton, afterok:JOBID, afterany:JOBID, ... (sbatch syntax)"
    )
    venv = parser.add_mutually_exclusive_group()
    venv.add_argument("--venv", help="virtual environment to activate on the compute node")
    venv.add_argument(
        "--no-venv", action="store_true", help="do not activate the submitting virtualenv"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script and submit nothing"
    )
    _add_log_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-slurm",
        description="Submit neox training to SLURM, run commands on compute nodes, and tell "
        "which jobs crashed, hung or how far they got.",
    )
    parser.add_argument("--version", action="version", version=f"neox-slurm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    submit = sub.add_parser("submit", help="submit neox-train with one or more configs")
    submit.add_argument("configs", nargs="+", metavar="CONFIG.yml", help="neox-train configs")
    _add_resource_flags(submit, gpus_flag="--gpus-per-node")
    submit.add_argument("--launcher", choices=["srun", "torchrun"], help="default: the profile's")
    submit.add_argument(
        "--train-command", default="neox-train", help="the training entry point (neox-train)"
    )
    submit.add_argument(
        "--no-requeue",
        action="store_true",
        help="no checkpoint-and-requeue signal before the time limit",
    )

    run = sub.add_parser(
        "run", help="run a command on a compute node (1 node, 1 GPU, 16 CPUs, 2 h by default)"
    )
    _add_resource_flags(run, gpus_flag="--gpus")
    run.add_argument(
        "--follow", action="store_true", help="stream the log; exit with the job's status"
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command")

    status = sub.add_parser("status", help="one row per job: state, progress, verdict")
    status.add_argument("jobs", nargs="*", metavar="JOBID", help="only these jobs")
    who = status.add_mutually_exclusive_group()
    who.add_argument("--user", "-u", help="jobs of this user (default: yours)")
    who.add_argument("--all-users", "-a", action="store_true", help="jobs of every user")
    status.add_argument("--name", help="job name glob, e.g. 'pythia-*'")
    status.add_argument(
        "--since", default="now-1days", help="sacct start time (default: now-1days)"
    )
    status.add_argument(
        "--stale-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a RUNNING job whose log has not changed for this long is STALE (default: 600)",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_log_flags(status)

    logs = sub.add_parser("logs", help="print a job's log")
    logs.add_argument("job", metavar="JOBID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    logs.add_argument("--lines", "-n", type=int, help="only the last N lines first")
    _add_log_flags(logs)

    cancel = sub.add_parser("cancel", help="cancel jobs by id or by name")
    cancel.add_argument("jobs", nargs="*", metavar="JOBID")
    cancel.add_argument("--name", help="cancel your queued and running jobs matching this glob")
    cancel.add_argument("--user", "-u", help="with --name: jobs of this user (default: yours)")

    progress = sub.add_parser("progress", help="loss and throughput over iterations")
    progress.add_argument("job", metavar="JOBID")
    progress.add_argument("--plot", type=Path, metavar="PNG", help="also write a PNG plot")
    progress.add_argument("--width", type=int, default=60, help="sparkline width")
    _add_log_flags(progress)

    sub.add_parser("profiles", help="list the profiles found and where")
    return parser


def _handlers() -> dict[str, Callable[[argparse.Namespace], int]]:
    from neox_slurm import commands

    return {
        "submit": commands.cmd_submit,
        "run": commands.cmd_run,
        "status": commands.cmd_status,
        "logs": commands.cmd_logs,
        "cancel": commands.cmd_cancel,
        "progress": commands.cmd_progress,
        "profiles": commands.cmd_profiles,
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from neox_slurm.profiles import ProfileError
    from neox_slurm.sbatch_script import ScriptError
    from neox_slurm.slurm_commands import SlurmError

    try:
        return _handlers()[args.command](args)
    except (SlurmError, ProfileError, ScriptError, FileNotFoundError) as exc:
        print(f"neox-slurm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
