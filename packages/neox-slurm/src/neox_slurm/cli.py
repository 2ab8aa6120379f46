"""`neox-slurm`: submit neox training to SLURM and tell the truth about each job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from neox_slurm import __version__
from neox_slurm.profiles import JOB_KINDS, SUBMIT_KINDS

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


def _add_watch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--iterations",
        type=int,
        default=50,
        metavar="N",
        help="healthy once N iterations are logged with a finite loss (default: 50)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a job whose log stays unchanged this long is STALE (default: 600)",
    )
    parser.add_argument(
        "--poll", type=float, default=5.0, metavar="SECONDS", help="seconds between looks (5)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 4)"
    )


def _add_job_flags(parser: argparse.ArgumentParser, *, gpus_flag: str) -> None:
    """Resources, venv, --dry-run and log flags of the commands that build their own jobs."""
    parser.add_argument("--nodes", type=int, help="number of nodes")
    parser.add_argument(gpus_flag, dest="gpus", type=int, help="GPUs per node (0 for none)")
    parser.add_argument("--cpus-per-task", "--cpus", dest="cpus", type=int, help="CPUs per task")
    parser.add_argument("--time", help="time limit, e.g. 02:00:00 or 1-00:00:00")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account to charge")
    venv = parser.add_mutually_exclusive_group()
    venv.add_argument("--venv", help="virtual environment to activate on the compute node")
    venv.add_argument(
        "--no-venv", action="store_true", help="do not activate the submitting virtualenv"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script(s) and submit nothing"
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
    submit.add_argument(
        "--kind",
        choices=SUBMIT_KINDS,
        help="job kind: node count etc. from the profile's kinds.<kind>, logs in <log dir>/<kind>"
        " (flags win)",
    )
    submit.add_argument(
        "--watch", action="store_true", help="then watch the job (see `neox-slurm watch`)"
    )
    _add_watch_flags(submit)

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
    status.add_argument("--kind", choices=JOB_KINDS, help="only jobs of this kind")
    _add_log_flags(status)

    watch = sub.add_parser(
        "watch",
        help="follow a fresh training job until N iterations with a finite loss (exit 0), a "
        "crash (1), a stale log (3) or --timeout (4)",
    )
    watch.add_argument("job", metavar="JOBID")
    _add_watch_flags(watch)
    _add_log_flags(watch)

    tunnel = sub.add_parser(
        "tunnel",
        help="a VS Code tunnel on a compute node; prints the login code and the vscode.dev link",
    )
    tunnel.add_argument("--name", help="tunnel name, 1-20 characters (default: neox-<user>)")
    tunnel.add_argument("--code", help="the VS Code CLI (default: the profile's code_cli)")
    tunnel.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="wait this long for the link (default: 900; the job goes on after)",
    )
    tunnel.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    _add_job_flags(tunnel, gpus_flag="--gpus")

    upload = sub.add_parser(
        "upload-checkpoints",
        help="one job per checkpoint step running `neox-ckpt upload`, chained by singleton",
        description="Submit one job per global_step<N> of EXPERIMENT, each running `neox-ckpt "
        "upload EXPERIMENT_DIR --org ORG --steps N [OPTIONS after --]`, named convert_<experiment> "
        "and chained with --dependency=singleton (one at a time per experiment); with --eval an "
        "evaluation job after each (afterok). EXPERIMENT is a path (holding '/') or a name in "
        "--experiments-dir, $NEOX_SLURM_EXPERIMENTS_DIR, the profile's experiments_dir, or the "
        "current folder. Example: neox-slurm upload-checkpoints my-exp my-lab --steps 1000-5000 "
        "-- --private --upload-delay random",
    )
    upload.add_argument("experiment", metavar="EXPERIMENT", help="experiment folder or name")
    upload.add_argument("org", nargs="?", metavar="ORG", help="Hub user or organisation")
    upload.add_argument("--steps", default="all", help="all (default), N,M,... or A-B")
    upload.add_argument(
        "--no-singleton", action="store_true", help="let the steps' jobs run side by side"
    )
    upload.add_argument("--eval", action="store_true", help="an evaluation job after each step")
    upload.add_argument("--eval-args", help="more arguments for the eval command, one string")
    upload.add_argument("--eval-command", help="default: the profile's eval_command (neox-eval)")
    upload.add_argument(
        "--eval-gpus", type=int, help="GPUs per eval job (the resource flags apply to both kinds)"
    )
    upload.add_argument("--eval-time", help="time limit of each eval job")
    upload.add_argument(
        "--upload-command", default="neox-ckpt", help="the neox-ckpt command (neox-ckpt)"
    )
    upload.add_argument("--experiments-dir", help="folder holding the experiments")
    _add_job_flags(upload, gpus_flag="--gpus-per-node")
    upload.epilog = (
        "OPTIONS after `--` go to every `neox-ckpt upload` (e.g. -- --dry-run --private)"
    )

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
        "watch": commands.cmd_watch,
        "tunnel": commands.cmd_tunnel,
        "upload-checkpoints": commands.cmd_upload_checkpoints,
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    upload_options: list[str] = []
    if argv and argv[0] == "upload-checkpoints" and "--" in argv:
        # everything after `--` belongs to `neox-ckpt upload`, never to neox-slurm
        cut = argv.index("--")
        argv, upload_options = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if args.command == "upload-checkpoints":
        args.upload_options = upload_options
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
