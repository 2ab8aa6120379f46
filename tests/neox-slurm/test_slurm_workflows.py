"""The users' cluster workflows against a real SLURM: watch, upload-checkpoints, tunnel.

Training is tests/neox-slurm/fake_trainer.py (GPT-NeoX log lines, no torch). The convert jobs
run the real `neox-ckpt upload --dry-run --upload-neox-only` (no torch, no network) on a tiny
checkpoint folder; the evaluation command and the VS Code CLI are stand-in scripts (a real
`neox-eval` needs a model and lm-eval; `code` needs github.com) that print what the real ones
print.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_slurm_cluster import RUN, TRAINER, Cli, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

FAST = ["--poll", "0.5"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(tmp_path_factory.mktemp("slurm-workflows"))


def _popen(cli: Cli, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "neox_slurm.cli", *args],
        cwd=cli.root, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_watch_exit_codes_for_healthy_crashed_nan_and_stale_jobs(cli: Cli) -> None:
    """Four jobs at once; `submit --watch` for the healthy one, `watch JOB` for the others."""
    ok = cli.config(f"t{RUN}-w-ok", train_iters=8, seconds_per_iter=0.1)
    submit = ["submit", ok, "--train-command", str(TRAINER), "--kind", "pretrain", "--watch"]
    healthy = _popen(cli, *submit, "--job-name", f"t{RUN}-w-ok", "--nodes", "1",
                     "--iterations", "5", *FAST)  # fmt: skip
    # the generic profile's pretrain kind asks for 2 nodes; this cluster has one
    too_big = _popen(cli, *submit, "--job-name", f"t{RUN}-w-big", *FAST)
    ids = {
        mode: cli.submit(f"t{RUN}-w-{mode}", train_iters=iters, seconds_per_iter=0.1, mode=mode)
        for mode, iters in (("exception_then_hang", 50), ("nan", 300), ("hang", 50))
    }
    watches = {
        "exception_then_hang": _popen(cli, "watch", ids["exception_then_hang"], *FAST),
        "nan": _popen(cli, "watch", ids["nan"], *FAST),
        "hang": _popen(cli, "watch", ids["hang"], "--stale-after", "2", *FAST),
        "timeout": _popen(cli, "watch", ids["hang"], "--timeout", "1", *FAST),
    }
    try:
        code, out, err = _finish(healthy)
        assert code == 0, err
        assert "Submitted job" in out and "is healthy: iteration" in err
        job = out.split()[2]
        assert f"job {job}: RUNNING iteration" in out
        assert (cli.root / "logs" / "pretrain" / f"neox-training-{job}.out").is_file()

        code, out, err = _finish(watches["exception_then_hang"])
        assert code == 1, err
        assert "CRASHED: Python exception: RuntimeError: fake trainer: shapes do not match" in err
        assert "CRASHED" in out  # the status row

        code, out, err = _finish(watches["nan"])
        assert code == 1, err
        assert "CRASHED: NaN/inf loss: loss nan at iteration" in err

        code, out, err = _finish(watches["hang"])
        assert code == 3, err
        assert "is STALE: stale: log unchanged for" in err
        # --timeout: queued or running, not stale, not at 50 iterations either
        code, out, err = _finish(watches["timeout"])
        assert code == 4 and "after --timeout 1 s (iteration" in err, err
        code, out, err = _finish(too_big)
        assert code == 1 and "will not start as it is: PartitionNodeLimit" in err, err
        ids["big"] = out.split()[2]
        # a job that ended well before N iterations is healthy, not waited for
        code, _, err = _finish(_popen(cli, "watch", job, "--iterations", "1000", *FAST))
        assert code == 0 and "COMPLETED at iteration 8/8" in err, err
    finally:
        for proc in (healthy, too_big, *watches.values()):
            if proc.poll() is None:
                proc.kill()
        cli("cancel", "--name", f"t{RUN}-w-*")  # only the queued and running ones
    rows = json.loads(cli("status", "--json", "--kind", "pretrain").stdout)
    assert sorted((r["job_id"] for r in rows), key=int) == sorted([job, ids["big"]], key=int)
    assert {r["kind"] for r in rows} == {"pretrain"}


def _show(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def _times(jobs: list[str]) -> dict[str, tuple[str, str]]:
    text = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(jobs), "--format", "JobID,Start,End,State"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = (line.split("|") for line in text.splitlines())
    return {job: (start, end) for job, start, end, _ in rows}


def test_upload_checkpoints_chains_real_neox_ckpt_jobs_with_eval(cli: Cli) -> None:
    experiment = f"t{RUN}-exp"
    exps = cli.root / "experiments"
    for step in (10, 20):
        step_dir = exps / experiment / "checkpoints" / f"global_step{step}"
        (step_dir / "configs").mkdir(parents=True)
        (step_dir / "configs" / "tiny.yml").write_text("train_iters: 20\n")
        (step_dir / "model_tp00_pp00.safetensors").write_bytes(b"\0" * 64)
        (step_dir / "manifest.json").write_text(json.dumps(
            {"format": "neox-checkpoint", "format_version": 2, "iteration": step}))  # fmt: skip
    fake_eval = cli.root / "fake-neox-eval"
    fake_eval.write_text('#!/bin/bash\necho "fake neox-eval: $*"\n')
    fake_eval.chmod(0o755)
    # a conversion of this experiment already running: the new chain waits behind it
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-J", f"convert_{experiment}", "-c", "1", "-o", "/dev/null",
         "--wrap", "sleep 3"], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    done = cli("upload-checkpoints", experiment, "lab", "--experiments-dir", str(exps), "--eval",
               "--eval-command", str(fake_eval), "--eval-args", "--tasks lambada_openai",
               "--", "--dry-run", "--upload-neox-only", "--endpoint", "http://127.0.0.1:9")  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        converts = [line.split()[3] for line in lines if "convert job" in line]
        evals = [line.split()[2] for line in lines if line.strip().startswith("eval job")]
        assert len(converts) == 2 and len(evals) == 2, done.stdout
        for job in converts:
            show = _show(job)
            assert f"JobName=convert_{experiment}" in show.split()
            assert "Dependency=singleton" in show
        for job, after in zip(evals, converts, strict=True):
            show = _show(job)
            assert f"JobName=eval_{experiment}" in show.split()
            assert f"Dependency=afterok:{after}" in show
        _, rows = cli.status("--kind", "convert", "--name", f"convert_{experiment}")
        assert sorted((r["job_id"] for r in rows), key=int) == sorted([blocker, *converts], key=int)
        assert {r["kind"] for r in rows} == {"convert"}
        waiting = next(r for r in rows if r["job_id"] == converts[1])
        assert waiting["diagnosis"] == "waiting: Dependency"

        def all_completed() -> bool:
            states = _times([*converts, *evals])
            _, rows = cli.status(*converts, *evals)
            return len(states) == 4 and all(r["state"] == "COMPLETED" for r in rows)

        wait_for("the chain to finish", all_completed, timeout=90)
        for step, job in zip((10, 20), converts, strict=True):
            log = (cli.root / "logs" / "convert" / f"neox-training-{job}.out").read_text()
            assert f"global_step{step}: lab/neox-ckpt-{experiment}@global_step{step}" in log, log
            assert "(dry run: nothing uploaded)" in log
        for step, job in zip((10, 20), evals, strict=True):
            log = (cli.root / "logs" / "eval" / f"neox-training-{job}.out").read_text()
            assert f"--iteration {step} --tasks lambada_openai" in log
    finally:
        cli("cancel", "--name", f"*_{experiment}")  # what is left of the chain
    # one at a time: each conversion starts after the previous one (and the blocker) ended
    times = _times([blocker, *converts, *evals])
    order = [blocker, *converts]
    for before, after in itertools.pairwise(order):
        assert times[after][0] >= times[before][1]
    for convert, evaluate in zip(converts, evals, strict=True):
        assert times[evaluate][0] >= times[convert][1]


FAKE_CODE = r"""#!/bin/bash
# Stand-in for the VS Code CLI: `code tunnel --accept-server-license-terms --name NAME`.
name="${@: -1}"
case "$name" in
  ok-*)
    echo "*"
    echo "* Visual Studio Code Server"
    echo "*"
    sleep 1
    echo "To grant access to the server, please log into https://github.com/login/device and use code 3F2A-91BC"
    sleep 1
    echo "[2024-05-01 10:00:00] info Creating tunnel with the name: $name"
    echo "Open this link in your browser https://vscode.dev/tunnel/$name$PWD"
    sleep 300 ;;
  fail-*)
    echo "[2024-05-01 10:00:00] info Creating tunnel with the name: $name"
    echo "[2024-05-01 10:00:01] error Could not create tunnel with name: $name"
    echo "Reason: ResponseError(ResponseError { url: None, status_code: 409 })"
    exit 1 ;;
  *) sleep 300 ;;
esac
"""


def test_tunnel_prints_the_login_code_and_link_or_why_not(cli: Cli) -> None:
    code = cli.root / "fake-code"
    code.write_text(FAKE_CODE)
    code.chmod(0o755)
    common = ["--code", str(code), "--gpus", "0", "--cpus", "1", "--time", "5"]
    ok = _popen(cli, "tunnel", "--name", f"ok-{RUN}", "--timeout", "60", "--poll", "0.5", *common)
    fail = _popen(cli, "tunnel", "--name", f"fail-{RUN}", "--timeout", "60", "--poll", "0.5",
                  *common)  # fmt: skip
    slow = _popen(cli, "tunnel", "--name", f"slow-{RUN}", "--timeout", "3", "--poll", "0.5",
                  *common)  # fmt: skip
    started = time.monotonic()
    try:
        status, out, err = _finish(ok)
        assert status == 0, err
        job = out.split()[2]
        login = "log in: open https://github.com/login/device and enter the code 3F2A-91BC"
        assert login in out
        link = f"tunnel: https://vscode.dev/tunnel/ok-{RUN}{cli.root}"
        assert link in out and out.index(login) < out.index(link)
        rows = wait_for("the tunnel's row", lambda: cli.status("--kind", "tunnel", job)[1], 30)
        assert rows[0]["state"] == "RUNNING" and rows[0]["name"] == f"tunnel-ok-{RUN}"

        status, out, err = _finish(fail)
        assert status == 1
        assert "ended FAILED first: exit code: the job exited with status 1" in err, err

        status, out, err = _finish(slow)
        assert status == 3 and "no tunnel link within --timeout 3 s" in err
        slow_job = out.split()[2]
    finally:
        for proc in (ok, fail, slow):
            if proc.poll() is None:
                proc.kill()
        cli("cancel", "--name", f"tunnel-*-{RUN}")
    assert time.monotonic() - started < 60
    assert slow_job
