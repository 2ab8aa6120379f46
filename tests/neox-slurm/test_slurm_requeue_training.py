"""Real `neox-train` under real SLURM: checkpoint-and-requeue three times, same final loss.

The job is the tiny CPU model submitted with `neox-slurm submit`. Three times in a row, once
it has trained a step after (re)starting, the batch shell gets USR1 (what SLURM sends
`--signal` seconds before the time limit): the sbatch script passes it to neox-train, which
saves and exits 0, and the script requeues the job, which resumes from `latest`. The run must
reach train_iters with the loss of an uninterrupted run, bit for bit as printed.

Slow as well as `slurm`: each of the four starts of neox-train costs ~20 s on a 2-core CPU
machine (importing torch alone is ~9 s), so the test takes about 80 s alone and up to ~6 minutes beside CI's other tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

NEOX_TRAIN = str(Path(sys.executable).parent / "neox-train")
LOSS = re.compile(r"iteration\s+(\d+)/\s*(\d+) \|.* lm_loss: ([0-9.E+-]+) \|")
# enough steps (~17 ms each unloaded) that each USR1, sent once a start has logged a step, lands
# well before train_iters even when the machine is quick; on a loaded one a step takes up to
# ~600 ms, so the wait for the end follows the log's progress instead of a fixed deadline
ITERS = 200
CONFIG = """\
{{
  "data-path": "{data}", "split": "90,10,0", "vocab_size": 96, "num-workers": 0,
  "num-layers": 2, "hidden-size": 32, "num-attention-heads": 4,
  "seq-length": 32, "max-position-embeddings": 32, "pos-emb": "rotary", "rotary-pct": 0.5,
  "no-weight-tying": true, "gpt-j-residual": true, "hidden-dropout": 0.1,
  "optimizer": {{"type": "Adam", "params": {{"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}}}},
  "min_lr": 0.0003, "lr-decay-style": "cosine", "warmup": 0.1, "weight-decay": 0.1,
  "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
  "train-iters": {iters}, "seed": 5, "eval-interval": 100, "eval-iters": 1, "log-interval": 1,
  "save": "{save}", "load": "{save}", "checkpoint-factor": 100,
}}
"""


def _wait_for(what: str, check: Callable[[], object], timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _wait_while_progressing(
    what: str, check: Callable[[], object], log: Path, state: Callable[[], str], stall: float = 120
) -> None:
    """Wait for `check` as long as `log` keeps growing: on CI, beside two busy pytest workers, a
    step takes up to 1.5 s and 200 of them several minutes. Fails after `stall` s without a new
    byte in the log, or after 15 minutes in all, saying `state()` and the log's tail."""
    started = last_change = time.monotonic()
    last_size = -1
    while not check():
        size = log.stat().st_size if log.exists() else 0
        now = time.monotonic()
        if size != last_size:
            last_size, last_change = size, now
        if now - last_change > stall or now - started > 900:
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise AssertionError(
                f"waiting for {what}: {log.name} did not grow for {now - last_change:.0f} s "
                f"({now - started:.0f} s in all); {state()}; the log ends:\n{tail}"
            )
        time.sleep(0.5)


def _write_run(root: Path, name: str, data: str) -> Path:
    cfg = root / f"{name}.yml"
    cfg.write_text(CONFIG.format(data=data, save=root / f"ckpt-{name}", iters=ITERS))
    return cfg


def _state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


_PENDING_SINCE: dict[tuple[str, int], float] = {}


def _release(job: str, log: Path, restart: int) -> bool:
    """True once restart N began; SLURM may hold a requeued job a while: release it, but only
    after it has been pending 5 s (started at once, slurmd can still hold the last run's revoked
    credential and kills the job: "Killing non-startable batch job: Job credential revoked")."""
    if f"restart {restart}," in log.read_text():
        return True
    if _state(job) != "PENDING":
        return False
    since = _PENDING_SINCE.setdefault((job, restart), time.monotonic())
    if time.monotonic() - since >= 5:
        subprocess.run(
            ["scontrol", "update", f"JobId={job}", "StartTime=now"],
            capture_output=True,
            check=False,
        )
    return False


def test_neox_train_requeued_three_times_ends_with_the_uninterrupted_loss(
    tmp_path: Path, learnable_corpus
) -> None:
    started = time.monotonic()
    data = learnable_corpus(tmp_path)
    ref_log = tmp_path / "reference.out"
    with ref_log.open("w") as sink:
        reference = subprocess.Popen(
            [NEOX_TRAIN, str(_write_run(tmp_path, "reference", data))],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "ci.yaml").write_text(
        "extends: generic\ngpus_per_node: 0\ncpus_per_task: 1\ntime: '00:30:00'\n"
        f"log_dir: {tmp_path / 'logs'}\n"
    )
    env = {
        **os.environ,
        "NEOX_SLURM_PROFILES": str(profiles),
        "NEOX_SLURM_PROFILE": "ci",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    for key in ("NEOX_SLURM_LOG_DIR", "NEOX_SLURM_LOG_PATTERN"):
        env.pop(key, None)
    cfg = _write_run(tmp_path, "requeued", data)
    done = subprocess.run(
        [sys.executable, "-m", "neox_slurm.cli", "submit", str(cfg), "--job-name", "requeue3",
         "--train-command", NEOX_TRAIN],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2]
    log = tmp_path / "logs" / f"neox-training-{job}.out"
    try:
        for restart in range(3):

            def trained_a_step(restart: int = restart) -> bool:
                if not log.exists():
                    return False
                starts = log.read_text().split("neox-slurm: job ")
                return len(starts) == restart + 2 and bool(LOSS.search(starts[-1]))

            _wait_for(f"a step after start {restart}", trained_a_step)
            subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
            _wait_for(
                f"requeue {restart + 1}", lambda r=restart: log.read_text().count("requeueing") > r
            )
            _wait_for(f"restart {restart + 1}", lambda r=restart: _release(job, log, r + 1), 60)
        _wait_while_progressing(
            "the job to finish", lambda: _state(job) == "", log, lambda: f"squeue: {_state(job)!r}"
        )
        _wait_while_progressing(
            "the uninterrupted run",
            lambda: reference.poll() is not None,
            ref_log,
            lambda: f"returncode {reference.poll()}",
        )
    finally:
        subprocess.run(["scancel", job], check=False)
        reference.kill()
    text = log.read_text()
    stops = [int(m) for m in re.findall(r"received SIGUSR1: stopping after iteration (\d+)", text)]
    saved = [int(m) for m in re.findall(r"resumed from \S+ at iteration (\d+)", text)]
    assert len(saved) == 3 and saved == stops, text[-3000:]
    assert saved == sorted(set(saved)) and saved[0] > 0 and saved[-1] < ITERS, text[-3000:]
    assert text.count("training exited with status 0 after the signal; requeueing") == 3
    assert "training exited with status 0 (" in text, text[-3000:]
    losses = {int(i): loss for i, _, loss in LOSS.findall(text)}
    assert sorted(losses) == list(range(1, ITERS + 1)), text[-3000:]

    ref_out = ref_log.read_text()
    assert reference.wait() == 0, ref_out[-3000:]
    ref = {int(i): loss for i, _, loss in LOSS.findall(ref_out)}
    assert losses[ITERS] == ref[ITERS]
    assert losses == ref
    print(f"requeue test: resumed at {saved}, {time.monotonic() - started:.0f} s")
