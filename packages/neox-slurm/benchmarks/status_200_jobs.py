"""Time `neox-slurm status` over 200 real jobs on the SLURM this machine reaches.

Submits 100 single jobs and a 100-task array (all named bench-<run>-*), each writing a
2,000-line GPT-NeoX training log (~0.5 MB); some fail with a traceback, a few keep running.
Then times the CLI (a fresh process, as a user or cron runs it) and its parts, prints a table
and cancels what is left. Needs a working SLURM with accounting (e.g. `.ci/slurm-up`).

    uv run python packages/neox-slurm/benchmarks/status_200_jobs.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

LOG_LINES = 2000
RUNNING = 4
WRITE_LOG = (
    "awk 'BEGIN {{ for (i = 1; i <= {n}; i++) printf \" samples/sec: 12.500 | iteration %8d/"
    "%8d | elapsed time per iteration (ms): 80.0 | learning rate: 6.000E-04 | approx flops per"
    " GPU: 1.0TFLOPS | lm_loss: %.6E | loss scale: 1.0 | number of skipped iterations:   0 |"
    " number of nan iterations:   0 |\\n\", i, 10000, 10 / i }}'"
)
TRACEBACK = (
    '; printf \'Traceback (most recent call last):\\n  File "train.py", line 1\\n'
    "RuntimeError: bench failure\\n'; exit 1"
)


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def timed(args: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
    return times


def submit_jobs(run: str, logs: Path) -> tuple[int, list[str]]:
    """200 jobs: 100 single ones (some failing, RUNNING of them kept running) and an array."""
    write = WRITE_LOG.format(n=LOG_LINES)
    sleepers: list[str] = []
    for i in range(100):
        tail = "; sleep 600" if i < RUNNING else (TRACEBACK if i % 10 == 0 else "")
        job = sh("sbatch", "--parsable", "-J", f"bench-{run}-{i}", "-c", "1", "-t", "15",
                 "-o", str(logs / "neox-training-%j.out"), "--wrap", write + tail)  # fmt: skip
        if i < RUNNING:
            sleepers.append(job.strip())
    sh("sbatch", "--parsable", "-J", f"bench-{run}-array", "-c", "1", "-t", "15",
       "--array=0-99", "-o", str(logs / "neox-training-%A_%a.out"), "--wrap", write)  # fmt: skip
    return 200, sleepers


def main() -> int:
    run = uuid.uuid4().hex[:6]
    logs = Path(tempfile.mkdtemp(prefix="neox-slurm-bench-"))
    submitted, sleepers = 0, []
    try:
        submitted, sleepers = submit_jobs(run, logs)
        return measure(run, logs, submitted)
    finally:
        if sleepers:
            subprocess.run(["scancel", *sleepers], check=False)


def measure(run: str, logs: Path, submitted: int) -> int:
    print(f"submitted {submitted} jobs; waiting for all but {RUNNING} to finish ...", flush=True)
    cli = [sys.executable, "-m", "neox_slurm.cli", "status", "--name", f"bench-{run}-*"]
    cli += ["--log-dir", str(logs)]
    deadline = time.monotonic() + 600
    rows: list[dict] = []
    while time.monotonic() < deadline:  # until accounting holds every end
        found = subprocess.run([*cli, "--json"], capture_output=True, text=True).stdout
        rows = json.loads(found) if found.strip() else []
        finished = sum(1 for r in rows if r["state"] in ("COMPLETED", "FAILED"))
        if len(rows) == submitted and finished == submitted - RUNNING:
            break
        time.sleep(2)
    verdicts: dict[str, int] = {}
    for row in rows:
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    with_progress = sum(1 for r in rows if r["iteration"] == LOG_LINES)
    without_log = sum(1 for r in rows if r["log"] is None)
    sacct = ["sacct", "-X", "-P", "-n", "--format", "JobID,JobIDRaw,JobName,State"]
    results = {
        "neox-slurm status (table)": timed(cli, 5),
        "neox-slurm status --json": timed([*cli, "--json"], 5),
        "  of which: sacct -X (all jobs)": timed([*sacct, "-S", "now-1days"], 5),
        "  of which: squeue": timed(["squeue", "-h", "-r"], 5),
        "  of which: scontrol show job": timed(["scontrol", "show", "job", "--oneliner"], 5),
        "  python start + import neox_slurm.cli": timed(
            [sys.executable, "-c", "import neox_slurm.cli, neox_slurm.commands"], 5
        ),
    }
    print(
        f"\n{len(rows)} jobs: {verdicts}; {with_progress} with iteration {LOG_LINES}/10000"
        f" parsed; {without_log} without a log found"
    )
    print(f"{'what':<42} {'min s':>7} {'median s':>9} {'max s':>7}")
    for what, times in results.items():
        print(f"{what:<42} {min(times):7.3f} {statistics.median(times):9.3f} {max(times):7.3f}")
    return 0 if len(rows) == submitted and without_log == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
