"""The work behind each `neox-slurm` subcommand (argparse namespace in, exit status out)."""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from pathlib import Path

from neox_slurm.follow import follow_log
from neox_slurm.job_index import recorded_logs
from neox_slurm.job_kinds import kind_log_dir
from neox_slurm.jobs import list_jobs, query_squeue, record_from_scontrol, scontrol_show_jobs
from neox_slurm.log_files import read_all_lines, read_tail
from neox_slurm.log_location import LogSettings, find_log, log_candidates, log_settings
from neox_slurm.profiles import Profile, available_profiles, load_profile
from neox_slurm.sbatch_script import JobSpec, ScriptError, render_script
from neox_slurm.slurm_commands import SlurmError, run_slurm
from neox_slurm.status_report import collect_status, render_json, render_table
from neox_slurm.submission import submit, submitting_venv
from neox_slurm.training_log import iteration_records

RUN_DEFAULTS: dict[str, int | str] = {
    "nodes": 1,
    "gpus_per_node": 1,
    "cpus_per_task": 16,
    "time": "02:00:00",
}
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


def _settings(args: argparse.Namespace) -> tuple[Profile, LogSettings]:
    profile = load_profile(args.profile)
    return profile, log_settings(profile, args.log_dir, args.log_pattern)


def _venv(args: argparse.Namespace, profile: Profile) -> Path | None:
    if args.venv:
        return Path(args.venv).expanduser().resolve()
    if args.no_venv or not profile.activate_submitting_venv:
        return None
    return submitting_venv()


def _log_dir(settings: LogSettings) -> Path:
    return (settings.log_dir or Path.cwd() / "logs").resolve()


def _profile_defaults(profile: Profile) -> dict[str, int | str]:
    return {
        "nodes": profile.nodes,
        "gpus_per_node": profile.gpus_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "time": profile.time,
    }


def _job_name_from(configs: list[Path]) -> str:
    name = re.sub(r"[^\w.-]+", "-", configs[0].stem).strip("-")
    return name or "neox-train"


def _emit(spec: JobSpec, dry_run: bool) -> tuple[int, str | None, Path | None]:
    if dry_run:
        sys.stdout.write(render_script(spec))
        return 0, None, None
    done = submit(spec)
    print(f"Submitted job {done.job_id}")
    print(f"log:    {done.log}")
    print(f"script: {done.script}")
    return 0, done.job_id, done.log


def _follow(job_id: str, log: Path, from_start: bool = True) -> tuple[str, int]:
    try:
        return follow_log(job_id, log, from_start=from_start)
    except KeyboardInterrupt:
        print(
            f"\nneox-slurm: stopped following; job {job_id} goes on"
            f" (neox-slurm cancel {job_id} to end it)",
            file=sys.stderr,
        )
        raise


def cmd_submit(args: argparse.Namespace) -> int:
    profile, settings = _settings(args)
    configs = []
    for raw in args.configs:
        path = Path(raw).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"config file {raw} does not exist ({path})")
        configs.append(path)
    # --kind: the kind's defaults from the profile (kinds.<kind>) and its log folder
    defaults = profile.kind(args.kind) if args.kind else _profile_defaults(profile)
    log_dir = _log_dir(settings)
    if args.kind and not args.log_dir:
        log_dir = kind_log_dir(profile, args.kind, log_dir)
    spec = JobSpec(
        job_name=args.job_name or _job_name_from(configs),
        command=[args.train_command, *map(str, configs)],
        profile=profile,
        log_dir=log_dir,
        log_pattern=settings.pattern,
        work_dir=Path.cwd().resolve(),
        nodes=args.nodes or int(defaults["nodes"]),
        gpus_per_node=int(defaults["gpus_per_node"]) if args.gpus is None else args.gpus,
        cpus_per_task=args.cpus or int(defaults["cpus_per_task"]),
        time=args.time or str(defaults["time"]),
        partition=args.partition or profile.partition,
        account=args.account or profile.account,
        dependency=args.dependency,
        venv=_venv(args, profile),
        launcher=args.launcher or profile.launcher,
        checkpoint_signal=None if args.no_requeue else profile.checkpoint_signal,
        checkpoint_signal_seconds=profile.checkpoint_signal_seconds,
        extra_sbatch=profile.sbatch,
        kind=args.kind,
    )
    status, job_id, _ = _emit(spec, args.dry_run)
    if args.watch and job_id is not None:
        return _watch(job_id, settings, args)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ScriptError("give the command after `--`, e.g. neox-slurm run -- nvidia-smi")
    profile, settings = _settings(args)
    defaults = {**RUN_DEFAULTS, **profile.run}
    spec = JobSpec(
        job_name=args.job_name or "neox-run",
        command=cmd,
        profile=profile,
        log_dir=_log_dir(settings),
        log_pattern=settings.pattern,
        work_dir=Path.cwd().resolve(),
        nodes=args.nodes or int(defaults["nodes"]),
        gpus_per_node=int(defaults["gpus_per_node"]) if args.gpus is None else args.gpus,
        cpus_per_task=args.cpus or int(defaults["cpus_per_task"]),
        time=args.time or str(defaults["time"]),
        partition=args.partition or profile.partition,
        account=args.account or profile.account,
        dependency=args.dependency,
        venv=_venv(args, profile),
        launcher="shell",
        checkpoint_signal=None,
        extra_sbatch=profile.sbatch,
    )
    status, job_id, log = _emit(spec, args.dry_run)
    if args.follow and job_id is not None and log is not None:
        state, code = _follow(job_id, log)
        print(f"neox-slurm: job {job_id} ended {state} (exit status {code})", file=sys.stderr)
        return code
    return status


def cmd_status(args: argparse.Namespace) -> int:
    _, settings = _settings(args)
    for job in args.jobs:
        if not _JOB_ID.match(job):
            raise ScriptError(f"{job!r} is not a job id")
    statuses = collect_status(
        settings,
        user=args.user,
        all_users=args.all_users,
        since=args.since,
        name_pattern=args.name,
        job_ids=args.jobs or None,
        stale_after=args.stale_after,
        kind=args.kind,
    )
    if args.json:
        print(render_json(statuses))
    elif statuses:
        print(render_table(statuses))
    else:
        print("no jobs")
    return 0 if all(s.healthy for s in statuses) else 1


def _job_log(job_id: str, settings: LogSettings, *, may_not_exist_yet: bool = False) -> Path:
    if not _JOB_ID.match(job_id):
        raise ScriptError(f"{job_id!r} is not a job id")
    try:  # the controller knows a job the moment it is submitted; accounting a bit later
        rows = scontrol_show_jobs(job_id)
    except SlurmError:
        rows = {}
    row = next(iter(rows.values()), None) if len(rows) == 1 else rows.get(job_id)
    if row is not None:
        job = record_from_scontrol(row)
    else:
        records = list_jobs(job_ids=[job_id], all_users=True)
        records = [r for r in records if job_id in (r.job_id, r.raw_id)]
        if not records:
            raise SlurmError(f"SLURM knows no job {job_id}")
        job = records[0]
    recorded = recorded_logs()
    log = find_log(job, settings, row, recorded)
    candidates = log_candidates(job, settings, row, recorded)
    if log is None and may_not_exist_yet and candidates and job.state in ("PENDING", "RUNNING"):
        return candidates[0]  # the job has not written its first line yet
    if log is None:
        tried = ", ".join(str(p) for p in candidates) or "nothing"
        raise FileNotFoundError(
            f"no log found for job {job_id} (tried {tried}); give --log-dir/--log-pattern"
        )
    return log


def cmd_logs(args: argparse.Namespace) -> int:
    _, settings = _settings(args)
    log = _job_log(args.job, settings, may_not_exist_yet=args.follow)
    lines = None
    if args.lines and log.exists():
        lines = read_tail(log, max_bytes=1 << 22, max_lines=args.lines)
    if args.follow:
        if lines is not None:
            sys.stdout.write("".join(line + "\n" for line in lines))
        _, code = _follow(args.job, log, from_start=lines is None)
        return code  # like `run --follow`: the job's exit status
    if lines is None:
        lines = read_all_lines(log)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    if bool(args.jobs) == bool(args.name):
        raise ScriptError("give job ids or --name PATTERN (one of the two)")
    ids = list(args.jobs)
    for job in ids:
        if not _JOB_ID.match(job):
            raise ScriptError(f"{job!r} is not a job id")
    if args.name:
        active = query_squeue(user=args.user, all_users=False)
        matching = [r.job_id for r in active if fnmatch.fnmatchcase(r.name, args.name)]
        # in submission order, whatever order squeue lists states in (pending before running)
        ids = sorted(matching, key=lambda j: (int(j.split("_")[0]), j))
        if not ids:
            print(f"no queued or running job matches {args.name!r}")
            return 1
    run_slurm(["scancel", *ids])
    print(f"cancelled {' '.join(ids)}")
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    _, settings = _settings(args)
    log = _job_log(args.job, settings)
    records = iteration_records(read_all_lines(log))
    from neox_slurm.progress import plot_png, summary

    print(f"job {args.job}  log {log}")
    print(summary(records, width=args.width))
    if args.plot is not None:
        if not records:
            print("nothing to plot", file=sys.stderr)
            return 1
        plot_png(records, args.plot, title=f"job {args.job}")
        print(f"plot:   {args.plot}")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    for name, path in available_profiles().items():
        profile = load_profile(str(path))
        print(f"{name:<12} {profile.description}  ({path})")
    return 0


def _watch(job_id: str, settings: LogSettings, args: argparse.Namespace) -> int:
    from neox_slurm.watch import watch_job

    result = watch_job(
        job_id,
        settings,
        iterations=args.iterations,
        stale_after=args.stale_after,
        poll=args.poll,
        timeout=args.timeout,
    )
    if result.status is not None and result.exit_code != 0:
        print(render_table([result.status]))
    print(f"neox-slurm watch: {result.message}", file=sys.stderr)
    return result.exit_code


def cmd_watch(args: argparse.Namespace) -> int:
    _, settings = _settings(args)
    if not _JOB_ID.match(args.job):
        raise ScriptError(f"{args.job!r} is not a job id")
    return _watch(args.job, settings, args)


def _shell_job(
    args: argparse.Namespace,
    profile: Profile,
    settings: LogSettings,
    kind: str,
    command: list[str],
    *,
    job_name: str,
    nodes: int | None = None,
    gpus: int | None = None,
    time: str | None = None,
) -> JobSpec:
    """A job that runs COMMAND once in the batch shell. Each resource from GPUS/TIME when given,
    then the flags, then NODES, then the profile's `kinds.<kind>`; logs in the kind's folder
    unless --log-dir names one."""
    defaults = profile.kind(kind)
    folder = _log_dir(settings)
    return JobSpec(
        job_name=job_name,
        command=command,
        profile=profile,
        log_dir=folder if args.log_dir else kind_log_dir(profile, kind, folder),
        log_pattern=settings.pattern,
        work_dir=Path.cwd().resolve(),
        nodes=args.nodes or nodes or int(defaults["nodes"]),
        gpus_per_node=int(
            next(g for g in (gpus, args.gpus, defaults["gpus_per_node"]) if g is not None)
        ),
        cpus_per_task=args.cpus or int(defaults["cpus_per_task"]),
        time=time or args.time or str(defaults["time"]),
        partition=args.partition or profile.partition,
        account=args.account or profile.account,
        venv=_venv(args, profile),
        launcher="shell",
        checkpoint_signal=None,
        extra_sbatch=profile.sbatch,
        kind=kind,
    )


def cmd_tunnel(args: argparse.Namespace) -> int:
    import getpass

    from neox_slurm.tunnel import (
        EXIT_JOB_ENDED,
        EXIT_TIMEOUT,
        default_tunnel_name,
        follow_tunnel,
        tunnel_command,
    )

    profile, settings = _settings(args)
    name = args.name or default_tunnel_name(getpass.getuser())
    try:
        command = tunnel_command(args.code or profile.code_cli, name)
    except ValueError as exc:
        raise ScriptError(str(exc)) from None
    spec = _shell_job(args, profile, settings, "tunnel", command, job_name=f"tunnel-{name}")
    _, job_id, log = _emit(spec, args.dry_run)
    if job_id is None or log is None:
        return 0
    code, state = follow_tunnel(job_id, log, timeout=args.timeout, poll=args.poll)
    if code == EXIT_TIMEOUT:
        print(
            f"neox-slurm tunnel: no tunnel link within --timeout {args.timeout:g} s; job"
            f" {job_id} goes on (neox-slurm logs {job_id} -f; neox-slurm cancel {job_id})",
            file=sys.stderr,
        )
    elif code == EXIT_JOB_ENDED:
        from neox_slurm.status_report import status_of_job

        status = status_of_job(job_id, settings)
        print(render_table([status]))
        why = status.diagnosis or f"exit code {status.exit_code}"
        print(f"neox-slurm tunnel: job {job_id} ended {state} first: {why}", file=sys.stderr)
    else:
        print(f"job {job_id} keeps the tunnel open (neox-slurm cancel {job_id} to close it)")
    return code


def cmd_upload_checkpoints(args: argparse.Namespace) -> int:
    import os
    import shlex

    from neox_slurm import checkpoint_uploads as cu

    profile, settings = _settings(args)
    passthrough = list(args.upload_options)
    org = args.org or profile.hub_org
    if not org:
        raise ScriptError("give ORG (the Hub user or organisation) or set hub_org in the profile")
    experiments_dir = (
        args.experiments_dir
        or os.environ.get("NEOX_SLURM_EXPERIMENTS_DIR")
        or profile.experiments_dir
    )
    path = cu.experiment_path(args.experiment, experiments_dir)
    renamed = [passthrough[i + 1] for i, o in enumerate(passthrough[:-1]) if o == "--experiment"]
    renamed += [o.split("=", 1)[1] for o in passthrough if o.startswith("--experiment=")]
    experiment = cu.find_experiment(path, renamed[-1] if renamed else None)
    steps = cu.select_steps(args.steps, list(experiment.steps))
    # one node each: `neox-ckpt upload` and `neox-eval` are single processes
    convert_template = _shell_job(
        args, profile, settings, "convert", ["true"], job_name="convert", nodes=1
    )
    eval_template = None
    if args.eval:
        eval_template = _shell_job(
            args, profile, settings, "eval", ["true"], job_name="eval", nodes=1,
            gpus=args.eval_gpus, time=args.eval_time,
        )  # fmt: skip
    plan = cu.plan_jobs(
        experiment,
        steps,
        org=org,
        convert_template=convert_template,
        eval_template=eval_template,
        passthrough=passthrough,
        eval_args=shlex.split(args.eval_args or ""),
        upload_cli=args.upload_command,
        eval_cli=args.eval_command or profile.eval_command,
        singleton=not args.no_singleton,
    )
    chain = "singleton chain" if not args.no_singleton else "side by side"
    print(
        f"experiment {experiment.name}: {len(steps)} of {len(experiment.steps)} step(s) in"
        f" {experiment.save_dir}, org {org}, jobs convert_{cu.job_name_part(experiment.name)}"
        f" ({chain})"
    )
    if args.dry_run:
        for jobs in plan:
            print(f"# ---- global_step{jobs.step}: convert job ----")
            sys.stdout.write(render_script(jobs.convert))
            if jobs.evaluate is not None:
                print(f"# ---- global_step{jobs.step}: eval job, submitted with"
                      " --dependency=afterok:<the convert job above> ----")  # fmt: skip
                sys.stdout.write(render_script(jobs.evaluate))
        return 0
    for jobs in plan:
        convert = submit(jobs.convert)
        line = f"global_step{jobs.step}: convert job {convert.job_id}  log {convert.log}"
        if jobs.evaluate is not None:
            from dataclasses import replace

            evaluate = submit(replace(jobs.evaluate, dependency=f"afterok:{convert.job_id}"))
            line += f"\n  eval job {evaluate.job_id} (afterok:{convert.job_id})  log {evaluate.log}"
        print(line)
    print(f"follow with: neox-slurm status --name 'convert_{cu.job_name_part(experiment.name)}'")
    return 0
