"""`neox-ckpt upload` against a local stand-in of the Hub (`hub_server.py`), faults injected.

The real Hub is not reachable from the test machines; these tests run huggingface_hub's own
client (HfApi, LFS upload path) against the stand-in and assert what it holds afterwards:
every revision, byte-identical files, one commit per revision, no LFS object sent twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer

from neox_ckpt.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples/tiny/tokenizer.json"
TOKEN = "hf_standin_secret_token_0123456789"
FAST = ["--retry-min-wait", "0.01", "--retry-max-wait", "0.05"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny experiment (the tiny example's model) with checkpoints at steps 10 and 20."""
    from neox_core.checkpoint import save_checkpoint
    from neox_core.config import config_to_dict, load_config
    from neox_core.models import build_model

    cfg = load_config(
        [ROOT / "examples/tiny/config.yml"], overrides={"data.vocab_file": str(TOKENIZER)}
    )
    exp = tmp_path_factory.mktemp("exp") / "tiny-run"
    for step in (10, 20):
        model = build_model(cfg.model, seed=step)
        opt = torch.optim.AdamW(model.parameters())
        save_checkpoint(
            exp / "checkpoints", step, model=model, optimizer=opt, config=config_to_dict(cfg)
        )
    return exp


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)  # the stand-in serves LFS, not Xet
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server = HubServer().start()
    yield server
    server.stop()


def _run(exp: Path, hub: HubServer, tmp: Path, *extra: str) -> int:
    state = str(tmp / "state.json")
    args = ["upload", str(exp), "--org", "lab", "--endpoint", hub.url, "--state-file", state]
    return main([*args, *FAST, *extra])


def _expected_neox(step_dir: Path) -> dict[str, bytes]:
    files = {f"{step_dir.name}/{p.relative_to(step_dir).as_posix()}": p.read_bytes()
             for p in step_dir.rglob("*") if p.is_file()}  # fmt: skip
    return {**files, "latest": f"{step_dir.name}\n".encode()}


def _expected_hf(step_dir: Path, tmp: Path) -> dict[str, bytes]:
    from neox_ckpt.neox_to_hf import neox_to_hf

    out = tmp / f"ref-{step_dir.name}"
    neox_to_hf(step_dir, out, precision="bf16", tokenizer=TOKENIZER)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _held(hub: HubServer, repo: str, rev: str) -> dict[str, bytes]:
    files = hub.state.files(repo, rev)
    assert files.pop(".gitattributes")
    return files


def _check_all(hub: HubServer, exp: Path, tmp: Path) -> None:
    ck = exp / "checkpoints"
    assert set(hub.state.repos) == {"lab/sfm-tiny-run", "lab/neox-ckpt-tiny-run"}
    for step in (10, 20):
        rev = f"global_step{step}"
        assert _held(hub, "lab/neox-ckpt-tiny-run", rev) == _expected_neox(ck / rev)
        held = _held(hub, "lab/sfm-tiny-run", rev)
        assert held == _expected_hf(ck / rev, tmp)
        assert "tokenizer.json" in held and "model.safetensors.index.json" in held
        # one commit per revision on top of the repository's initial commit
        assert len(hub.state.history("lab/sfm-tiny-run", rev)) == 2
        assert len(hub.state.history("lab/neox-ckpt-tiny-run", rev)) == 2
    assert _held(hub, "lab/sfm-tiny-run", "main") == _held(hub, "lab/sfm-tiny-run", "global_step20")
    assert set(hub.state.repos["lab/neox-ckpt-tiny-run"].branches) == {
        "main", "global_step10", "global_step20"}  # fmt: skip
    assert all(n == 1 for n in hub.state.lfs_puts.values()), "an LFS object was uploaded twice"


def test_upload_all_steps_then_rerun_skips(experiment, hub, tmp_path, capsys) -> None:
    assert _run(experiment, hub, tmp_path) == 0
    _check_all(hub, experiment, tmp_path)
    assert hub.state.auth == {f"Bearer {TOKEN}"}
    state = json.loads((tmp_path / "state.json").read_text())
    assert {t["status"] for t in state["targets"].values()} == {"done"}
    assert len(state["targets"]) == 5
    commits = len(hub.state.log)
    # a rerun uploads nothing: the state file's commits are still the branch heads
    assert _run(experiment, hub, tmp_path) == 0
    out = capsys.readouterr()
    assert out.out.count("already uploaded (state file)") == 5
    assert all(m == "GET" for m, _, _ in hub.state.log[commits:])
    for text in (out.out, out.err, (tmp_path / "state.json").read_text()):
        assert TOKEN not in text


def test_without_state_file_identical_revisions_are_skipped(experiment, hub, tmp_path) -> None:
    assert _run(experiment, hub, tmp_path, "--steps", "10") == 0
    (tmp_path / "state.json").unlink()
    before = {r: dict(repo.branches) for r, repo in hub.state.repos.items()}
    n = len(hub.state.log)
    assert _run(experiment, hub, tmp_path, "--steps", "10") == 0
    assert {r: dict(repo.branches) for r, repo in hub.state.repos.items()} == before
    assert not [p for m, p, _ in hub.state.log[n:] if "/commit/" in p or "/lfs" in p]
    assert "global_step20" not in hub.state.repos["lab/sfm-tiny-run"].branches
    # step 10 is not the experiment's last step: main keeps only the initial commit
    assert len(hub.state.history("lab/sfm-tiny-run", "main")) == 1


def test_429_and_500_are_retried(experiment, hub, tmp_path, caplog) -> None:
    # commit and refs calls are not retried inside huggingface_hub: ours must do it
    hub.fail("POST", r"/commit/global_step10$", 429, times=2, retry_after="0")
    hub.fail("POST", r"/commit/main$", 429, times=1)  # no Retry-After
    hub.fail("GET", r"/refs$", 500, times=2)
    hub.fail("POST", r"/api/repos/create", 503, times=1)
    hub.fail("POST", r"/branch/global_step20$", 502, times=1)
    with caplog.at_level("WARNING", logger="neox_ckpt.upload"):
        assert _run(experiment, hub, tmp_path) == 0
    _check_all(hub, experiment, tmp_path)
    assert all(f.hits == f.times for f in hub.state.faults)
    msgs = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 429" in msgs and "HTTP 500" in msgs and "HTTP 503" in msgs
    assert "server asked for 0 s" in msgs


def test_lost_commit_response_is_not_committed_twice(experiment, hub, tmp_path) -> None:
    hub.fail("POST", r"/commit/global_step20$", 500, times=1, after=True)
    assert _run(experiment, hub, tmp_path) == 0
    _check_all(hub, experiment, tmp_path)  # one commit per revision despite the retry


def test_connection_cut_mid_upload(experiment, hub, tmp_path) -> None:
    hub.fail("PUT", r"/lfs-upload/", 0, times=1)
    assert _run(experiment, hub, tmp_path) == 0
    _check_all(hub, experiment, tmp_path)
    assert any(s == 0 for m, _, s in hub.state.log if m == "PUT")


def test_failure_names_step_and_repo_and_rerun_continues(experiment, hub, tmp_path, capsys):
    # the raw upload of step 20 keeps failing: the run stops there with a state file
    hub.fail("POST", r"neox-ckpt-tiny-run/commit/global_step20$", 500, times=3)
    assert _run(experiment, hub, tmp_path, "--max-retries", "2") == 2
    err = capsys.readouterr().err
    assert "step 20, neox repo lab/neox-ckpt-tiny-run revision global_step20" in err
    assert "HTTP 500" in err and "rerun the same command" in err
    state = json.loads((tmp_path / "state.json").read_text())
    status = {k: v["status"] for k, v in state["targets"].items()}
    assert status["lab/neox-ckpt-tiny-run@global_step20"] == "failed"
    assert status["lab/sfm-tiny-run@main"] == "done"
    # the HF repo holds step 20's LFS objects; a half-finished raw target: its branch exists
    assert "global_step20" in hub.state.repos["lab/neox-ckpt-tiny-run"].branches
    assert _run(experiment, hub, tmp_path) == 0
    _check_all(hub, experiment, tmp_path)


def test_half_finished_revision_is_completed(experiment, hub, tmp_path) -> None:
    """A branch holding some files (one wrong, one stale) is brought to exactly the step."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url)
    api.create_repo("lab/neox-ckpt-tiny-run")
    api.create_branch("lab/neox-ckpt-tiny-run", branch="global_step10")
    step = experiment / "checkpoints/global_step10"
    api.create_commit(
        "lab/neox-ckpt-tiny-run",
        [
            CommitOperationAdd("global_step10/manifest.json", str(step / "manifest.json")),
            CommitOperationAdd("global_step10/config.json", b"{}"),
            CommitOperationAdd("stale.txt", b"left over"),
        ],
        commit_message="partial",
        revision="global_step10",
    )
    assert _run(experiment, hub, tmp_path, "--upload-neox-only", "--steps", "10") == 0
    assert _held(hub, "lab/neox-ckpt-tiny-run", "global_step10") == _expected_neox(step)
    assert "lab/sfm-tiny-run" not in hub.state.repos


def test_private_skip_neox_and_delay(experiment, hub, tmp_path, capsys) -> None:
    args = ["--skip-neox-upload", "--private", "--steps", "20", "--upload-delay", "0.2"]
    assert _run(experiment, hub, tmp_path, *args) == 0
    assert "waiting 0 s before uploading (--upload-delay 0.2)" in capsys.readouterr().out
    assert set(hub.state.repos) == {"lab/sfm-tiny-run"}
    assert hub.state.repos["lab/sfm-tiny-run"].private


def test_dry_run_prints_plan_without_network(experiment, tmp_path, capsys) -> None:
    args = [
        "upload",
        str(experiment),
        "--org",
        "lab",
        "--dry-run",
        "--endpoint",
        "http://0.0.0.0:9",
    ]
    assert main([*args, "--steps", "10-20", "--state-file", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "experiment 'tiny-run' -> lab/sfm-tiny-run (unchanged)" in out
    for line in ("lab/sfm-tiny-run@global_step10", "lab/sfm-tiny-run@global_step20",
                 "lab/sfm-tiny-run@main", "lab/neox-ckpt-tiny-run@global_step20"):  # fmt: skip
        assert line in out
    assert "lab/sfm-tiny-run@main" not in out.split("global_step20:")[0]
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    "spec, expected",
    [("all", [10, 20, 30]), ("20", [20]), ("10,30", [10, 30]), ("15-30", [20, 30])],
)
def test_step_selection(spec, expected) -> None:
    from neox_ckpt.hub_upload import select_steps

    assert select_steps(spec, [10, 20, 30]) == expected


@pytest.mark.parametrize("spec", ["40", "31-39", "x", "30-10"])
def test_step_selection_refuses(spec) -> None:
    from neox_ckpt.errors import ConversionError
    from neox_ckpt.hub_upload import select_steps

    with pytest.raises(ConversionError, match="--steps"):
        select_steps(spec, [10, 20, 30])
