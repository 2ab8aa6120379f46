"""neox-slurm against a real SLURM: submit, follow, cancel and classify real jobs.

The jobs are seconds long; the "training" is tests/neox-slurm/fake_trainer.py printing
GPT-NeoX log lines. One job runs into a 1-minute time limit in the background while the
others run, so the whole module takes about as long as that job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

HERE = Path(__file__).resolve().parent
TRAINER = HERE / "fake_trainer.py"
RUN = uuid.uuid4().hex[:6]


class Cli:
    """`neox-slurm` in a fresh process, in a scratch folder, with a test profile."""

    def __init__(self, root: Path) -> None:
        self.root = root
        profiles = root / "profiles"
        profiles.mkdir(parents=True, exist_ok=True)
        (profiles / "ci.yaml").write_text(
            "extends: generic\n"
            "description: the single-node CI cluster (no GPUs)\n"
            "gpus_per_node: 0\ncpus_per_task: 1\ntime: '00:05:00'\n"
            "run: {gpus_per_node: 0, cpus_per_task: 1, time: '00:05:00'}\n"
            f"log_dir: {root / 'logs'}\n"
        )
        self.env = {
            **os.environ,
            "NEOX_SLURM_PROFILES": str(profiles),
            "NEOX_SLURM_PROFILE": "ci",
            "XDG_STATE_HOME": str(root / "state"),
        }
        for key in ("NEOX_SLURM_LOG_DIR", "NEOX_SLURM_LOG_PATTERN"):
            self.env.pop(key, None)

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "neox_slurm.cli", *args],
            cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    def config(self, name: str, **values: object) -> str:
        path = self.root / f"{name}.yml"
        path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
        return str(path)

    def submit(self, name: str, **values: object) -> str:
        config = self.config(name, **values)
        done = self("submit", config, "--job-name", name, "--train-command", str(TRAINER))
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[2]  # "Submitted job <id>"

    def status(self, *args: str) -> tuple[int, list[dict]]:
        """Exit code and `status --json` rows of this session's jobs (their names carry RUN).

        A controller brought up again without its saved state hands out job ids again, and
        accounting keeps earlier sessions' jobs under them; `status` then lists both, as it
        should for ids used twice. The tests look at their own jobs only.
        """
        done = self("status", "--json", *args)
        assert done.returncode in (0, 1), done.stderr
        rows = json.loads(done.stdout)
        mine = [row for row in rows if RUN in row["name"]]
        if len(mine) == len(rows):
            return done.returncode, rows
        return int(not all(row["healthy"] for row in mine)), mine


def wait_for(what: str, check: Callable[[], object], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def row_of(cli: Cli, job: str, *args: str) -> dict:
    deadline = time.monotonic() + 30
    code, rows = cli.status(job, *args)
    while not rows and time.monotonic() < deadline:
        # only an earlier session's job under this id so far: ours ended before accounting
        # recorded it and the controller no longer lists it; accounting catches up
        time.sleep(0.5)
        code, rows = cli.status(job, *args)
    (row,) = rows
    assert code == (0 if row["healthy"] else 1)
    return row


def verdict_is(cli: Cli, job: str, verdict: str, *args: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        row = row_of(cli, job, *args)
        return row if row["verdict"] == verdict else None

    return check


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(tmp_path_factory.mktemp("slurm"))


@pytest.fixture(scope="module")
def timeout_job(cli: Cli) -> str:
    """A job that runs into its 1-minute limit while the other tests run."""
    done = cli("run", "--time", "1", "--job-name", f"t{RUN}-limit", "--", "sleep", "300")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[2]


@pytest.fixture(scope="module")
def signalled_job(cli: Cli) -> str:
    """Training with a 1-minute limit: SLURM itself sends USR1 before it (--signal)."""
    config = cli.config(
        f"t{RUN}-signal", train_iters=2000, seconds_per_iter=0.1, save=cli.root / "ckpt-signal"
    )
    done = cli("submit", config, "--time", "1", "--train-command", str(TRAINER))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[2]


def test_run_follow_streams_the_log_and_returns_the_exit_status(
    cli: Cli, timeout_job: str, signalled_job: str
) -> None:
    done = cli("run", "--follow", "--job-name", f"t{RUN}-run", "--", "bash", "-c",
               "echo hello from $SLURM_JOB_NODELIST; exit 3")  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "hello from localhost" in done.stdout
    job = done.stdout.split()[2]
    row = row_of(cli, job)
    assert (row["state"], row["verdict"], row["exit_code"]) == ("FAILED", "FAILED", 3)
    ok = cli("run", "--follow", "--", "python", "-c", "print(6 * 7)")
    assert ok.returncode == 0 and "42" in ok.stdout
    # a progress-bar block (3 UTF-8 bytes) written in two halves, more than a poll apart
    split = cli("run", "--follow", "--", "bash", "-c",
                r"printf 'bar \xe2\x96'; sleep 2; printf '\x88 done\n'")  # fmt: skip
    assert split.returncode == 0, split.stderr
    assert "bar \u2588 done" in split.stdout, split.stdout


def test_completed_training_shows_progress_loss_and_rendezvous(cli: Cli) -> None:
    job = cli.submit(f"t{RUN}-ok", train_iters=5, seconds_per_iter=0.05)
    follow = cli("logs", job, "--follow")
    assert follow.returncode == 0, follow.stderr
    assert "fake trainer: rank 0/1 master localhost:" in follow.stdout
    assert f"master localhost:{20000 + int(job) % 20000}" in follow.stdout
    row = wait_for("accounting to record the end", verdict_is(cli, job, "COMPLETED"))
    assert (row["iteration"], row["total"], row["percent"]) == (5, 5, 100.0)
    assert row["loss"] == pytest.approx(2.0)
    assert row["log"] == str(cli.root / "logs" / f"neox-training-{job}.out")
    assert (cli.root / "logs" / f"neox-training-{job}.sbatch").read_text().startswith("#!")
    recorded = (cli.root / "state" / "neox-slurm" / "submitted.tsv").read_text()
    assert f"{job}\t{cli.root / 'logs' / f'neox-training-{job}.out'}\t" in recorded
    plot = cli.root / "ok.png"
    progress = cli("progress", job, "--plot", str(plot))
    assert progress.returncode == 0, progress.stderr
    assert "iteration 5/5 (100.0%)" in progress.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_failed_training_reports_its_exit_code(cli: Cli) -> None:
    job = cli.submit(f"t{RUN}-fail", train_iters=2, seconds_per_iter=0.05, mode="fail")
    row = wait_for("FAILED", verdict_is(cli, job, "FAILED"))
    assert row["exit_code"] == 3 and row["healthy"] is False
    assert row["diagnosis"] == "exit code: the job exited with status 3"


def test_running_job_with_a_traceback_is_crashed_then_cancelled(cli: Cli) -> None:
    job = cli.submit(f"t{RUN}-crash", train_iters=50, seconds_per_iter=0.1,
                     mode="exception_then_hang")  # fmt: skip
    crashed = verdict_is(cli, job, "CRASHED")

    def traceback_written() -> dict | None:  # a look between the traceback's lines sees only
        row = crashed()  # its first, "Traceback (most recent call last):"
        return row if row and "Traceback" not in row["diagnosis"] else None

    row = wait_for("CRASHED", traceback_written, timeout=60)
    assert row["state"] == "RUNNING"
    assert row["diagnosis"] == (
        "Python exception: RuntimeError: fake trainer: shapes do not match (3 vs 4)"
    )
    assert row["iteration"] == 3
    from neox_slurm.jobs import query_squeue  # the fallback when accounting is absent

    (queued,) = [r for r in query_squeue(job_ids=[job])]
    assert queued.state == "RUNNING" and queued.stdout.endswith("neox-training-%j.out")
    # A job of the user's own, logging stderr apart from stdout: the traceback is there.
    split = subprocess.run(
        ["sbatch", "--parsable", "-J", f"t{RUN}-split", "-c", "1", "-o", "split-%j.out",
         "-e", "split-%j.err", "--wrap",
         "echo ' iteration 7/9 | lm_loss: 1.5E+00 |';"
         f" {sys.executable} -c 'raise KeyError(\"no_such_key\")'; sleep 60"],
        cwd=cli.root, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    row = wait_for("CRASHED", verdict_is(cli, split, "CRASHED"), timeout=60)
    assert row["diagnosis"] == "Python exception: KeyError: 'no_such_key'"
    assert row["error_log"] == str(cli.root / f"split-{split}.err")
    assert row["iteration"] == 7
    done = cli("cancel", job, split)
    assert done.returncode == 0 and f"cancelled {job} {split}" in done.stdout
    row = wait_for("CANCELLED", verdict_is(cli, job, "CANCELLED"))
    # Cancelled, and the log still tells why it had to be.
    assert row["diagnosis"].startswith("Python exception: RuntimeError: fake trainer")


def test_silent_running_job_is_stale_and_cancel_by_name(cli: Cli) -> None:
    name = f"t{RUN}-hang"
    job = cli.submit(name, train_iters=50, seconds_per_iter=0.05, mode="hang")
    row = wait_for("STALE", verdict_is(cli, job, "STALE", "--stale-after", "2"), timeout=60)
    assert row["state"] == "RUNNING" and row["iteration"] == 2
    assert row["diagnosis"].startswith("stale: log unchanged for")
    assert row_of(cli, job, "--stale-after", "600")["verdict"] == "RUNNING"
    # A cluster without accounting: sacct refuses, status falls back to squeue.
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    no_accounting = cli.root / "no-accounting.conf"
    no_accounting.write_text(
        re.sub(r"(?m)^AccountingStorageType=.*$", "AccountingStorageType=accounting_storage/none",
               conf)
    )  # fmt: skip
    plain = cli.env
    cli.env = {**plain, "SLURM_CONF": str(no_accounting)}
    try:
        assert subprocess.run(["sacct"], env=cli.env, capture_output=True).returncode != 0
        row = row_of(cli, job, "--stale-after", "2")
    finally:
        cli.env = plain
    assert (row["state"], row["verdict"], row["iteration"]) == ("RUNNING", "STALE", 2)
    assert row["log"] == str(cli.root / "logs" / f"neox-training-{job}.out")
    done = cli("cancel", "--name", f"t{RUN}-ha*")
    assert done.returncode == 0 and done.stdout.strip() == f"cancelled {job}"
    row = wait_for("CANCELLED", verdict_is(cli, job, "CANCELLED"))
    banner = rf"cancelled: slurmstepd\S*: error: \*\*\* (JOB|STEP) {job}(\.\d+)? .*CANCELLED AT"
    assert re.match(banner, row["diagnosis"]), row["diagnosis"]
    code, rows = cli.status("--name", f"t{RUN}-hang")
    assert code == 1 and [r["job_id"] for r in rows] == [job]


def test_checkpoint_signal_then_requeue_resumes_from_the_checkpoint(cli: Cli) -> None:
    save = cli.root / "ckpt"
    job = cli.submit(f"t{RUN}-requeue", train_iters=400, seconds_per_iter=0.05, save=save)
    log = cli.root / "logs" / f"neox-training-{job}.out"
    wait_for("training", lambda: log.exists() and "iteration" in log.read_text())
    # What SLURM does `--signal` seconds before the time limit, done now:
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    wait_for("the requeue", lambda: "requeueing" in log.read_text())
    saved = int((save / "latest").read_text())
    assert saved > 0 and f"saving checkpoint at iteration {saved:8d}" in log.read_text()
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    assert "Restarts=1" in show.stdout
    # SLURM holds a requeued job for a while; release it now rather than wait.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    # the released job waits for a free slot behind the other tests' jobs on a loaded machine
    # (60 s was once too short: CI of 119df11)
    wait_for("the restart", lambda: f"resuming at {saved}" in log.read_text(), timeout=180)
    assert "restart 1," in log.read_text()
    assert cli("cancel", job).returncode == 0


def test_singleton_dependency_holds_the_second_job(cli: Cli) -> None:
    name = f"t{RUN}-single"
    config = cli.config(name, train_iters=100, seconds_per_iter=0.1)
    ids = []
    for _ in range(2):
        done = cli("submit", config, "--dependency", "singleton", "--job-name", name,
                   "--train-command", str(TRAINER))  # fmt: skip
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.split()[2])

    def reason() -> str:
        out = subprocess.run(["squeue", "-h", "-j", ids[1], "-o", "%T %r"], capture_output=True,
                             text=True).stdout.strip()  # fmt: skip
        return out if out == "PENDING Dependency" else ""

    wait_for("the second job to wait on the first", reason, timeout=15)
    assert row_of(cli, ids[1])["diagnosis"] == "waiting: Dependency"
    assert cli("cancel", "--name", name).stdout.split()[1:] == sorted(ids, key=int)


def test_time_limit_is_timeout(cli: Cli, timeout_job: str) -> None:
    # The limit counts from the start; a busy cluster may start the job late.
    wait_for("the start", lambda: row_of(cli, timeout_job)["state"] != "PENDING", timeout=180)
    row = wait_for("TIMEOUT", verdict_is(cli, timeout_job, "TIMEOUT"), timeout=150)
    assert row["diagnosis"] == "SLURM time limit: the job reached its time limit"
    assert row["healthy"] is False


def test_slurm_signals_before_the_time_limit_and_the_job_requeues(
    cli: Cli, signalled_job: str
) -> None:
    script = (cli.root / "logs" / f"neox-training-{signalled_job}.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@6" in script  # a tenth of the 1-minute limit
    log = cli.root / "logs" / f"neox-training-{signalled_job}.out"
    wait_for(
        "SLURM's signal and the requeue",
        lambda: log.exists() and "requeueing" in log.read_text(),
        100,
    )
    text = log.read_text()
    assert "SIGUSR1 before the time limit" in text
    saved = int((cli.root / "ckpt-signal" / "latest").read_text())
    assert f"saving checkpoint at iteration {saved:8d}" in text
    assert "DUE TO TIME LIMIT" not in text  # it left before SLURM had to kill it
    show = subprocess.run(["scontrol", "show", "job", signalled_job], capture_output=True,
                          text=True).stdout  # fmt: skip
    assert "Restarts=1" in show
    assert cli("cancel", signalled_job).returncode == 0


def test_node_failure_is_node_fail(cli: Cli) -> None:
    """Runs last: marking the only node down ends every job on it."""
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                          check=True).stdout.split()[0]  # fmt: skip

    # Other test sessions may share this cluster: never kill their jobs.
    def cluster_quiet() -> bool:
        return not subprocess.run(["squeue", "-h", "-t", "RUNNING,PENDING"],
                                  capture_output=True, text=True).stdout.strip()  # fmt: skip

    try:
        wait_for("the cluster to be quiet", cluster_quiet, timeout=90)
    except AssertionError:
        pytest.skip("other jobs are on the only node; marking it down would kill them")
    # --no-requeue: by default SLURM requeues a batch job whose node failed.
    job = subprocess.run(
        ["sbatch", "--parsable", "--no-requeue", "-J", f"t{RUN}-node", "-c", "1",
         "-o", str(cli.root / "logs" / "neox-training-%j.out"), "--wrap", "echo up; sleep 120"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    wait_for("RUNNING", verdict_is(cli, job, "RUNNING"))
    reason = "reason=neox-slurm test"
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", reason], check=True)
    try:
        row = wait_for("NODE_FAIL", verdict_is(cli, job, "NODE_FAIL"))
        assert row["diagnosis"] == "node failure: SLURM reports a node failure"
    finally:

        def idle() -> bool:
            states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                                    text=True).stdout  # fmt: skip
            if "idle" in states:
                return True
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                           capture_output=True)  # fmt: skip
            return False

        wait_for("the node to return", idle, timeout=30)


@pytest.mark.slow
def test_torchrun_launcher_runs_the_trainer(cli: Cli) -> None:
    """One torchrun agent per node (imports torch on the node, hence slow)."""
    name = f"t{RUN}-torchrun"
    config = cli.config(name, train_iters=3, seconds_per_iter=0.05)
    done = cli("submit", config, "--launcher", "torchrun", "--job-name", name,
               "--train-command", str(TRAINER))  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2]
    row = wait_for("COMPLETED", verdict_is(cli, job, "COMPLETED"), timeout=120)
    assert (row["iteration"], row["total"]) == (3, 3)
    log = (cli.root / "logs" / f"neox-training-{job}.out").read_text()
    assert "fake trainer: rank 0/1 master " in log


@pytest.mark.slow
def test_torchrun_launcher_passes_the_checkpoint_signal_to_its_workers(cli: Cli) -> None:
    """torchrun would die of USR1; it starts with USR1 ignored, so only its workers act."""
    name = f"t{RUN}-torchrun-signal"
    save = cli.root / "ckpt-torchrun"
    config = cli.config(name, train_iters=2000, seconds_per_iter=0.05, save=save)
    done = cli("submit", config, "--launcher", "torchrun", "--job-name", name,
               "--train-command", str(TRAINER))  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2]
    log = cli.root / "logs" / f"neox-training-{job}.out"
    wait_for("training", lambda: log.exists() and "iteration" in log.read_text(), timeout=120)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    try:
        wait_for("the requeue", lambda: "requeueing" in log.read_text())
        text = log.read_text()
        saved = int((save / "latest").read_text())
        assert f"saving checkpoint at iteration {saved:8d} (signal 10)" in text
        assert "training exited with status 0 after the signal" in text
    finally:
        cli("cancel", job)
