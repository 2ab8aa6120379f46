"""sbatch script generation and profiles, through the CLI's --dry-run and the public API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from neox_slurm.cli import main
from neox_slurm.profiles import ProfileError, available_profiles, load_profile
from neox_slurm.sbatch_script import JobSpec, ScriptError, render_script


def _dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["submit", *args, "--dry-run"]) == 0
    return capsys.readouterr().out


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEOX_SLURM_LOG_DIR", raising=False)
    monkeypatch.delenv("NEOX_SLURM_LOG_PATTERN", raising=False)
    monkeypatch.delenv("NEOX_SLURM_PROFILE", raising=False)
    monkeypatch.setenv("NEOX_SLURM_PROFILES", str(tmp_path / "profiles"))
    (tmp_path / "cfg").mkdir()
    for name in ("pythia-160m.yml", "local.yml"):
        (tmp_path / "cfg" / name).write_text("train_iters: 10\n")
    return ["cfg/pythia-160m.yml", "cfg/local.yml"]


def test_dry_run_prints_a_valid_script_with_absolute_configs(
    configs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _dry_run(capsys, *configs, "--nodes", "2", "--gpus-per-node", "4", "--time", "1:00:00")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in [
        "#SBATCH --job-name=pythia-160m",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --time=1:00:00",
        f"#SBATCH --output={tmp_path}/logs/neox-training-%j.out",
        "#SBATCH --signal=B:USR1@600",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
    ]:
        assert directive in lines, directive
    launch = next(line for line in lines if line.startswith("srun "))
    assert f"neox-train {tmp_path}/cfg/pythia-160m.yml {tmp_path}/cfg/local.yml" in launch
    assert "RANK=$SLURM_PROCID" in launch and "--ntasks-per-node=4" in launch
    assert any(line.startswith("MASTER_ADDR=$(scontrol show hostnames") for line in lines)
    assert "trap on_time_limit_signal USR1" in lines
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert not (tmp_path / "logs").exists(), "a dry run writes nothing"
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_dependency_partition_account_and_no_requeue(
    configs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    script = _dry_run(
        capsys, configs[0], "--dependency", "afterok:123:124", "--partition", "gh",
        "--account", "brics.a1", "--no-requeue", "--gpus-per-node", "0",
    )  # fmt: skip
    assert "#SBATCH --dependency=afterok:123:124" in script
    assert "#SBATCH --partition=gh" in script and "#SBATCH --account=brics.a1" in script
    assert "--signal" not in script and "--requeue" not in script
    assert "--gpus-per-node" not in script
    assert "#SBATCH --dependency=singleton" in _dry_run(
        capsys, configs[0], "--dependency", "singleton"
    )


def test_torchrun_launcher_starts_one_agent_per_node(
    configs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    script = _dry_run(capsys, configs[0], "--launcher", "torchrun", "--gpus-per-node", "4")
    assert "#SBATCH --ntasks-per-node=1" in script
    assert "--nproc-per-node=4" in script
    assert '--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"' in script


def test_isambard_profile_sets_the_slingshot_environment(
    configs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    script = _dry_run(capsys, configs[0], "--profile", "isambard", "--no-venv")
    for line in [
        "export NCCL_NET='AWS Libfabric'",
        "export FI_PROVIDER=cxi",
        "export NCCL_CROSS_NIC=1",
        "export NCCL_NET_GDR_LEVEL=PHB",
        "module load brics/nccl",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --exclusive",
    ]:
        assert line in script.splitlines(), line
    assert "bin/activate" not in script


def test_venv_activation(
    configs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _dry_run(capsys, configs[0], "--venv", str(tmp_path / "env"))
    assert f"source {tmp_path}/env/bin/activate" in script


def test_user_profile_extends_a_packaged_one(
    configs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "mylab.yaml").write_text(
        "extends: isambard\ndescription: my lab\npartition: gh\nenv:\n  WANDB_MODE: offline\n"
        "setup:\n  - echo ready\nlog_dir: /scratch/me/logs\n"
    )
    assert available_profiles()["mylab"] == folder / "mylab.yaml"
    profile = load_profile("mylab")
    assert profile.env["FI_PROVIDER"] == "cxi" and profile.env["WANDB_MODE"] == "offline"
    assert profile.gpus_per_node == 4 and profile.partition == "gh"
    script = _dry_run(capsys, configs[0], "--profile", "mylab")
    assert "#SBATCH --output=/scratch/me/logs/neox-training-%j.out" in script
    assert "echo ready" in script.splitlines() and "export WANDB_MODE=offline" in script


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus_per_node: four\n", "key 'gpus_per_node' must be int"),
        ("colour: red\n", "unknown key 'colour'"),
        ("launcher: mpirun\n", "key 'launcher' must be one of"),
        ("- a\n- b\n", "a profile is a mapping"),
        ("env: {A: [1]}\n", "env.A must be a string"),
        ("nodes: [\n", "not valid YAML"),
    ],
)
def test_bad_profiles_name_the_file_and_key(
    configs: list[str], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "profiles" / "bad.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    with pytest.raises(ProfileError, match=message) as info:
        load_profile("bad")
    assert str(path) in str(info.value)


def test_cli_errors_are_clear(configs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "cfg/missing.yml", "--dry-run"]) == 2
    assert "config file cfg/missing.yml does not exist" in capsys.readouterr().err
    assert main(["submit", configs[0], "--time", "soon", "--dry-run"]) == 2
    assert "--time 'soon' is not a SLURM time" in capsys.readouterr().err
    assert main(["submit", configs[0], "--dependency", "after-ok:1", "--dry-run"]) == 2
    assert "--dependency 'after-ok:1'" in capsys.readouterr().err
    assert main(["submit", configs[0], "--profile", "nope", "--dry-run"]) == 2
    assert "no profile named 'nope'" in capsys.readouterr().err
    assert main(["run", "--dry-run"]) == 2
    assert "give the command after `--`" in capsys.readouterr().err


def test_run_script_runs_the_command_as_given(
    configs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--dry-run", "--no-venv", "--", "python", "-c", "print('a b')"]) == 0
    script = capsys.readouterr().out
    for directive in [
        "#SBATCH --nodes=1", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=16",
        "#SBATCH --time=02:00:00", "#SBATCH --job-name=neox-run",
    ]:  # fmt: skip
        assert directive in script.splitlines(), directive
    assert "python -c 'print('\"'\"'a b'\"'\"')'" in script.splitlines()
    assert "--signal" not in script


def test_generated_shell_runs_and_exits_with_the_command_status(tmp_path: Path) -> None:
    """The run script outside SLURM: the command's exit status is the script's."""
    spec = JobSpec(
        job_name="t", command=["bash", "-c", "echo out; exit 7"], profile=load_profile("generic"),
        log_dir=tmp_path, log_pattern="x-%j.out", work_dir=tmp_path, launcher="shell",
    )  # fmt: skip
    script = tmp_path / "job.sh"
    script.write_text(render_script(spec))
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n1"}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 7
    assert proc.stdout.splitlines()[-1] == "out"


def test_invalid_specs_are_refused(tmp_path: Path) -> None:
    base = dict(
        job_name="t", command=["x"], profile=load_profile("generic"), log_dir=tmp_path,
        log_pattern="x-%j.out", work_dir=tmp_path,
    )  # fmt: skip
    for change, message in [
        ({"nodes": 0}, "--nodes"),
        ({"job_name": "a b"}, "job name"),
        ({"log_pattern": "a/b-%j"}, "must be a file name"),
        ({"command": []}, "no command"),
    ]:
        with pytest.raises(ScriptError, match=message):
            render_script(JobSpec(**{**base, **change}))  # type: ignore[arg-type]


def test_signal_time_fits_inside_short_time_limits(
    configs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from neox_slurm.sbatch_script import time_limit_seconds

    assert time_limit_seconds("90") == 5400
    assert time_limit_seconds("1:30") == 90
    assert time_limit_seconds("2:00:00") == 7200
    assert time_limit_seconds("1-2") == 93600
    assert time_limit_seconds("1-00:00:30") == 86430
    assert time_limit_seconds("UNLIMITED") is None
    assert "#SBATCH --signal=B:USR1@600" in _dry_run(capsys, configs[0], "--time", "1:00:00")
    assert "#SBATCH --signal=B:USR1@30" in _dry_run(capsys, configs[0], "--time", "5")


def test_directive_values_with_spaces_are_quoted_for_sbatch(
    configs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "my project" / "logs"
    script = _dry_run(capsys, configs[0], "--log-dir", str(logs), "--partition", "gpu")
    lines = script.splitlines()
    # unquoted, sbatch stops the value at the space and rejects the rest as a directive
    assert f'#SBATCH --output="{logs}/neox-training-%j.out"' in lines
    assert f'#SBATCH --error="{logs}/neox-training-%j.out"' in lines
    assert "#SBATCH --partition=gpu" in lines
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    assert main(["submit", configs[0], "--log-dir", str(tmp_path / 'a"b'), "--dry-run"]) != 0
    assert "double quote" in capsys.readouterr().err


def test_requeue_comment_states_the_signal_time_actually_used(
    configs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    script = _dry_run(capsys, configs[0], "--time", "5")
    assert "#SBATCH --signal=B:USR1@30" in script
    assert "SLURM sends USR1 to this shell 30 s before the time limit" in script
