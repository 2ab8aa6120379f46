"""`upload-checkpoints`: one SLURM job per checkpoint step, each running `neox-ckpt upload`.

The users' scripts chain these jobs with `--dependency=singleton` under the job name
`convert_<experiment>`, so one experiment converts and uploads one step at a time (the Hub
rate-limits bursts, and `neox-ckpt upload` keeps one state file per experiment); an evaluation
job may follow each step (`afterok:<convert job>`). neox-slurm imports no neox package, so the
steps are found here by the rule `neox-ckpt upload` applies: complete `global_step<N>` folders
(with `manifest.json`) in the experiment folder or its `checkpoints/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from neox_slurm.sbatch_script import JobSpec, ScriptError

STEP_DIR = re.compile(r"global_step(\d+)")
STATE_FILE = "hub_upload_state.json"
# Options `upload-checkpoints` sets itself on every `neox-ckpt upload` it submits.
_OWN_OPTIONS = ("--org", "--steps")


@dataclass(frozen=True)
class Experiment:
    """An experiment folder, its name (for job and repository names) and its checkpoints."""

    path: Path
    name: str
    save_dir: Path
    steps: dict[int, Path]


def experiment_path(experiment: str, experiments_dir: str | Path | None) -> Path:
    """EXPERIMENT as a folder: a path (holding `/`, or `.`/`..`) is used as is; a bare name is
    looked up in EXPERIMENTS_DIR, or in the current folder when none is configured."""
    if "/" in experiment or experiment in (".", ".."):
        path = Path(experiment).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"experiment folder {experiment} does not exist ({path})")
        return path.resolve()
    base = Path(experiments_dir).expanduser() if experiments_dir else Path.cwd()
    path = base / experiment
    if not path.is_dir():
        where = f"experiments folder {base}" if experiments_dir else f"the current folder {base}"
        raise FileNotFoundError(
            f"no experiment {experiment!r} in {where} (give a path, --experiments-dir, "
            "$NEOX_SLURM_EXPERIMENTS_DIR or the profile's experiments_dir)"
        )
    return path.resolve()


def find_experiment(path: Path, name: str | None = None) -> Experiment:
    """The complete `global_step<N>` folders of the experiment at PATH (or in its checkpoints/)."""
    for save in (path, path / "checkpoints"):
        if not save.is_dir():
            continue
        steps = {
            int(m.group(1)): p
            for p in sorted(save.iterdir())
            if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)) and (p / "manifest.json").is_file()
        }
        if steps:
            default = path.parent.name if path.name == "checkpoints" else path.name
            return Experiment(path=path, name=name or default, save_dir=save, steps=steps)
    raise FileNotFoundError(
        f"{path}: no complete global_step<N> folders (with manifest.json) in it or in its "
        "checkpoints/ folder"
    )


def select_steps(spec: str, available: list[int]) -> list[int]:
    """`all`, `N,M`, `A-B` (inclusive, of the steps present) or a mix: `neox-ckpt upload`'s
    `--steps`, so each job can be given one of the steps chosen here."""
    if spec.strip() == "all":
        return sorted(available)
    chosen: set[int] = set()
    present = ", ".join(map(str, sorted(available)))
    for item in spec.split(","):
        item = item.strip()
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", item):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ScriptError(f"--steps {spec!r}: range {item} runs backwards")
            found = [s for s in available if lo <= s <= hi]
            if not found:
                raise ScriptError(f"--steps {spec!r}: no checkpoint in {item} (present: {present})")
            chosen.update(found)
        elif item.isdigit():
            if int(item) not in available:
                raise ScriptError(
                    f"--steps {spec!r}: no global_step{int(item)} (present: {present})"
                )
            chosen.add(int(item))
        else:
            raise ScriptError(f"--steps {spec!r}: expected all, N, N,M,... or A-B")
    return sorted(chosen)


def job_name_part(name: str) -> str:
    """An experiment name as it may stand in a SLURM job name."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "experiment"


def check_passthrough(options: list[str]) -> None:
    for option in options:
        if option.split("=", 1)[0] in _OWN_OPTIONS:
            raise ScriptError(
                f"{option.split('=', 1)[0]} is set by upload-checkpoints itself (ORG and "
                "--steps are its own arguments); leave it out after `--`"
            )


@dataclass(frozen=True)
class StepJobs:
    """The convert job of one step and, with --eval, the evaluation job that follows it."""

    step: int
    convert: JobSpec
    evaluate: JobSpec | None


def upload_command(
    upload_cli: str,
    experiment: Experiment,
    step: int,
    org: str,
    passthrough: list[str],
    *,
    own_state_file: bool,
) -> list[str]:
    """`neox-ckpt upload` for one step; with OWN_STATE_FILE (jobs running side by side) each
    step keeps its own state file so no two jobs rewrite the same one."""
    command = [upload_cli, "upload", str(experiment.path), "--org", org, "--steps", str(step)]
    if own_state_file and not any(o.split("=", 1)[0] == "--state-file" for o in passthrough):
        state = experiment.path / f"hub_upload_state.global_step{step}.json"
        command += ["--state-file", str(state)]
    return [*command, *passthrough]


def eval_command(eval_cli: str, experiment: Experiment, step: int, extra: list[str]) -> list[str]:
    """`neox-eval` on the step: the run's own configs (saved in the checkpoint) with --load and
    --iteration pointing at it."""
    step_dir = experiment.steps[step]
    configs = sorted(p for p in (step_dir / "configs").glob("*") if p.suffix in (".yml", ".yaml"))
    if not configs:
        raise FileNotFoundError(
            f"{step_dir}/configs holds no YAML config: --eval needs the run's configs there"
        )
    return [
        eval_cli,
        *map(str, configs),
        "--load",
        str(experiment.save_dir),
        "--iteration",
        str(step),
        *extra,
    ]


def plan_jobs(
    experiment: Experiment,
    steps: list[int],
    *,
    org: str,
    convert_template: JobSpec,
    eval_template: JobSpec | None,
    passthrough: list[str],
    eval_args: list[str],
    upload_cli: str,
    eval_cli: str,
    singleton: bool,
) -> list[StepJobs]:
    """The jobs of every step, in submission order. The templates hold resources and paths;
    the eval jobs' `afterok` dependency is only known once their convert job is submitted."""
    check_passthrough(passthrough)
    name = job_name_part(experiment.name)
    jobs = []
    for step in steps:
        command = upload_command(
            upload_cli, experiment, step, org, passthrough, own_state_file=not singleton
        )
        convert = replace(
            convert_template,
            job_name=f"convert_{name}",
            command=command,
            dependency="singleton" if singleton else None,
            kind="convert",
        )
        evaluate = None
        if eval_template is not None:
            evaluate = replace(
                eval_template,
                job_name=f"eval_{name}",
                command=eval_command(eval_cli, experiment, step, eval_args),
                kind="eval",
            )
        jobs.append(StepJobs(step=step, convert=convert, evaluate=evaluate))
    return jobs
