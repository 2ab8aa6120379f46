"""Job kinds, upload-checkpoints plans, tunnel output and watch targets, offline (--dry-run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neox_slurm.cli import main
from neox_slurm.job_index import record_submission, recorded_kinds, recorded_logs
from neox_slurm.job_kinds import kind_of
from neox_slurm.profiles import SUBMIT_KINDS, ProfileError, load_profile
from neox_slurm.tunnel import TunnelInfo, default_tunnel_name, read_line
from neox_slurm.watch import target_iteration


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in ("NEOX_SLURM_LOG_DIR", "NEOX_SLURM_LOG_PATTERN", "NEOX_SLURM_PROFILE",
                "NEOX_SLURM_EXPERIMENTS_DIR"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NEOX_SLURM_PROFILES", str(tmp_path / "profiles"))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "run.yml").write_text("train_iters: 10\n")
    return tmp_path


def _out(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def _directive(script: str, option: str) -> str | None:
    prefix = f"#SBATCH --{option}="
    found = [line[len(prefix) :] for line in script.splitlines() if line.startswith(prefix)]
    return found[0] if found else None


@pytest.mark.parametrize("kind", SUBMIT_KINDS)
def test_isambard_kind_sets_nodes_and_log_folder(
    kind: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _out(capsys, "submit", "run.yml", "--profile", "isambard", "--kind", kind, "--dry-run")
    assert _directive(script, "nodes") == ("64" if kind in ("pretrain", "midtrain") else "16")
    assert _directive(script, "output") == f"{workdir}/logs/{kind}/neox-training-%j.out"
    assert f"job kind {kind!r}" in script
    assert _directive(script, "gpus-per-node") == "4"  # the profile's own, kept


def test_flags_win_over_kind_defaults(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _out(capsys, "submit", "run.yml", "--profile", "isambard", "--kind", "pretrain",
                  "--nodes", "8", "--time", "1:00:00", "--log-dir", "mine", "--dry-run")  # fmt: skip
    assert _directive(script, "nodes") == "8" and _directive(script, "time") == "1:00:00"
    assert _directive(script, "output") == f"{workdir}/mine/neox-training-%j.out"
    plain = _out(capsys, "submit", "run.yml", "--profile", "isambard", "--dry-run")
    assert _directive(plain, "nodes") == "1"  # no --kind: the profile's plain default
    assert _directive(plain, "output") == f"{workdir}/logs/neox-training-%j.out"
    generic = _out(capsys, "submit", "run.yml", "--kind", "pretrain", "--dry-run")
    assert _directive(generic, "nodes") == "2"
    assert (
        _directive(_out(capsys, "submit", "run.yml", "--kind", "sft", "--dry-run"), "nodes") == "1"
    )


def test_user_profile_changes_one_kind_and_its_log_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "profiles" / "site.yaml").write_text(
        "extends: isambard\nlog_dir: /scratch/logs\n"
        "kinds:\n  pretrain: {nodes: 128, log_dir: big}\n  dpo: {log_dir: /elsewhere/dpo}\n"
    )
    profile = load_profile("site")
    assert profile.kind("pretrain")["nodes"] == 128 and profile.kind("midtrain")["nodes"] == 64
    assert profile.kind("dpo")["nodes"] == 16  # merged per kind, not replaced
    script = _out(
        capsys, "submit", "run.yml", "--profile", "site", "--kind", "pretrain", "--dry-run"
    )
    assert _directive(script, "output") == "/scratch/logs/big/neox-training-%j.out"
    script = _out(capsys, "submit", "run.yml", "--profile", "site", "--kind", "dpo", "--dry-run")
    assert _directive(script, "output") == "/elsewhere/dpo/neox-training-%j.out"


@pytest.mark.parametrize(
    "text, message",
    [
        ("kinds: {train: {nodes: 2}}", "unknown job kind kinds.train"),
        ("kinds: {sft: {gpus: 2}}", "unknown key kinds.sft.gpus"),
        ("kinds: {sft: {nodes: two}}", "kinds.sft.nodes must be int"),
        ("kinds: {sft: 4}", "kinds.sft must be a mapping"),
        ("code_cli: 3", "key 'code_cli' must be str"),
    ],
)
def test_bad_kind_entries_name_the_file_and_key(workdir: Path, text: str, message: str) -> None:
    path = workdir / "profiles" / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ProfileError, match=message) as info:
        load_profile("bad")
    assert str(path) in str(info.value)


def _experiment(root: Path, name: str = "exp-1", steps: tuple[int, ...] = (100, 200, 300)) -> Path:
    exp = root / name
    for step in steps:
        step_dir = exp / "checkpoints" / f"global_step{step}"
        (step_dir / "configs").mkdir(parents=True)
        (step_dir / "manifest.json").write_text("{}")
        (step_dir / "configs" / "model.yml").write_text("train_iters: 300\n")
    (exp / "checkpoints" / "global_step400").mkdir()  # incomplete: no manifest.json
    return exp


def _scripts(out: str) -> list[str]:
    return [part for part in out.split("#!/bin/bash")[1:]]


def test_upload_checkpoints_plans_a_singleton_chain_with_eval(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _experiment(workdir / "exps")
    out = _out(capsys, "upload-checkpoints", "exp-1", "lab", "--experiments-dir", "exps",
               "--steps", "200-300", "--eval", "--eval-args", "--tasks lambada_openai",
               "--dry-run", "--", "--private", "--upload-delay", "random")  # fmt: skip
    assert out.startswith("experiment exp-1: 2 of 3 step(s)")
    scripts = _scripts(out)
    assert len(scripts) == 4  # convert, eval for steps 200 and 300
    for script, step in ((scripts[0], 200), (scripts[2], 300)):
        assert _directive(script, "job-name") == "convert_exp-1"
        assert _directive(script, "dependency") == "singleton"
        assert _directive(script, "nodes") == "1"
        assert _directive(script, "output") == f"{workdir}/logs/convert/neox-training-%j.out"
        assert (f"neox-ckpt upload {exp} --org lab --steps {step} --private --upload-delay random"
                in script)  # fmt: skip
    for script, step in ((scripts[1], 200), (scripts[3], 300)):
        assert _directive(script, "job-name") == "eval_exp-1"
        assert _directive(script, "dependency") is None  # afterok:<id> once submitted
        assert _directive(script, "output") == f"{workdir}/logs/eval/neox-training-%j.out"
        configs = exp / "checkpoints" / f"global_step{step}" / "configs" / "model.yml"
        assert (f"neox-eval {configs} --load {exp / 'checkpoints'} --iteration {step}"
                " --tasks lambada_openai" in script)  # fmt: skip
    assert "afterok:<the convert job above>" in out
    assert not (workdir / "logs").exists(), "a dry run writes nothing"


def test_upload_checkpoints_side_by_side_keeps_a_state_file_per_step(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _experiment(workdir, "runs.v2")
    out = _out(capsys, "upload-checkpoints", str(exp), "lab", "--no-singleton", "--dry-run")
    scripts = _scripts(out)
    assert len(scripts) == 3
    for script, step in zip(scripts, (100, 200, 300), strict=True):
        assert _directive(script, "dependency") is None
        assert f"--state-file {exp}/hub_upload_state.global_step{step}.json" in script
    # the profile's hub_org when ORG is left out; a bare name is looked up in the current folder
    (workdir / "profiles" / "lab.yaml").write_text("extends: generic\nhub_org: my-lab\n")
    out = _out(capsys, "upload-checkpoints", "runs.v2", "--profile", "lab", "--steps", "100",
               "--dry-run")  # fmt: skip
    assert f"upload {exp} --org my-lab --steps 100" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "lab"], "no experiment 'nope' in the current folder"),
        (["./nope", "lab"], "experiment folder ./nope does not exist"),
        (["exp-1"], "give ORG"),
        (["exp-1", "lab", "--steps", "150"], "no global_step150 (present: 100, 200, 300)"),
        (["exp-1", "lab", "--steps", "500-600"], "no checkpoint in 500-600"),
        (["exp-1", "lab", "--", "--steps", "100"], "--steps is set by upload-checkpoints"),
        (["exp-1", "lab", "--", "--org=x"], "--org is set by upload-checkpoints"),
    ],
)
def test_upload_checkpoints_refuses_bad_requests(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    _experiment(workdir)
    assert main(["upload-checkpoints", *args, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_eval_needs_the_runs_configs(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = _experiment(workdir)
    for step in (100, 200, 300):
        (exp / "checkpoints" / f"global_step{step}" / "configs" / "model.yml").unlink()
    assert main(["upload-checkpoints", "exp-1", "lab", "--eval", "--dry-run"]) == 2
    assert "configs holds no YAML config" in capsys.readouterr().err


def test_tunnel_script_uses_the_profiles_code_cli(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "profiles" / "vs.yaml").write_text("extends: isambard\ncode_cli: /opt/vscode/code\n")
    script = _out(capsys, "tunnel", "--profile", "vs", "--name", "gh200", "--dry-run")
    assert ([_directive(script, o) for o in ("nodes", "gpus-per-node", "time", "job-name")]
            == ["1", "4", "24:00:00", "tunnel-gh200"])  # fmt: skip
    assert "/opt/vscode/code tunnel --accept-server-license-terms --name gh200" in script
    assert _directive(script, "output") == f"{workdir}/logs/tunnel/neox-training-%j.out"
    assert main(["tunnel", "--name", "a name with spaces", "--dry-run"]) == 2
    assert default_tunnel_name("a.very.long.user.name.indeed") == "neox-a-very-long-use"


@pytest.mark.parametrize(
    "lines, expected",
    [
        # VS Code CLI 1.8x and later
        (["*", "To grant access to the server, please log into https://github.com/login/device"
          " and use code 3F2A-91BC"],
         TunnelInfo("https://github.com/login/device", "3F2A-91BC", None)),
        # the first CLI releases printed code and URL the other way round
        (["To grant access to the server, please log into 3F2A-91BC and use code"
          " https://github.com/login/device"],
         TunnelInfo("https://github.com/login/device", "3F2A-91BC", None)),
        (["[2024-05-01 10:00:00] info Creating tunnel with the name: gh200",
          "\x1b[1mOpen this link in your browser https://vscode.dev/tunnel/gh200/home/ann\x1b[0m"],
         TunnelInfo(None, None, "https://vscode.dev/tunnel/gh200/home/ann")),
        (["error: could not resolve host github.com"], TunnelInfo()),
    ],
)  # fmt: skip
def test_tunnel_output_lines_are_read(lines: list[str], expected: TunnelInfo) -> None:
    info = TunnelInfo()
    for line in lines:
        info = read_line(line, info)
    assert info == expected


def test_watch_target_counts_from_a_resumed_runs_first_iteration() -> None:
    assert target_iteration(1, 50) == 50 and target_iteration(10, 50) == 50
    assert target_iteration(5010, 50) == 5060


def test_kinds_are_recorded_and_guessed_from_names(workdir: Path) -> None:
    record_submission("11", workdir / "a.out", workdir / "a.sbatch", "pretrain")
    record_submission("12", workdir / "b.out", workdir / "b.sbatch")  # the old 3-field line
    assert recorded_kinds() == {"11": "pretrain"}
    assert recorded_logs() == {"11": workdir / "a.out", "12": workdir / "b.out"}
    kinds = recorded_kinds()
    assert kind_of("11", "pythia", kinds) == "pretrain"
    assert kind_of("12", "convert_exp-1", kinds) == "convert"
    assert kind_of("13", "eval_exp-1", kinds) == "eval"
    assert kind_of("14", "tunnel-gh200", kinds) == "tunnel"
    assert kind_of("15", "pythia", kinds) is None


def test_every_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = ["submit", "run", "status", "watch", "tunnel", "upload-checkpoints", "logs",
                "cancel", "progress", "profiles"]  # fmt: skip
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"neox-slurm {command}" in capsys.readouterr().out
