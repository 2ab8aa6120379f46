"""Status of jobs from recorded SLURM output and recorded logs (no SLURM needed)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from neox_slurm.jobs import JobRecord, parse_sacct, parse_scontrol_jobs
from neox_slurm.log_location import LogSettings, find_log, log_candidates
from neox_slurm.profiles import load_profile
from neox_slurm.slurm_commands import SlurmError, expand_filename_pattern
from neox_slurm.status_report import render_json, render_table, statuses_of
from neox_slurm.verdict import classify

DATA = Path(__file__).parent / "data"
SACCT_FIELDS = [
    "JobID", "JobIDRaw", "JobName", "User", "State", "ExitCode", "Elapsed", "Start", "End",
    "WorkDir", "NodeList", "Timelimit", "Reason",
]  # fmt: skip


def test_recorded_sacct_of_slurm_22_05() -> None:
    records = parse_sacct((DATA / "sacct_slurm-22.05.txt").read_text(), SACCT_FIELDS)
    by_id = {r.job_id: r for r in records}
    assert by_id["1"].state == "FAILED" and by_id["1"].exit_code == 3
    assert by_id["5"].state == "CANCELLED" and by_id["5"].name == "exp|pipe"
    assert by_id["5"].work_dir == "/tmp/ns"
    assert by_id["6_0"].raw_id == "7" and by_id["6_0"].name == "sweep"
    assert by_id["4"].time_limit == "00:05:00"


def test_short_sacct_line_is_a_clear_error() -> None:
    with pytest.raises(SlurmError, match="line 1 has too few fields"):
        parse_sacct("1|1|x\n", SACCT_FIELDS)


def test_scontrol_oneliner_keeps_values_with_spaces() -> None:
    text = (
        "JobId=12 JobName=my job UserId=root(0) JobState=RUNNING Reason=None "
        "ExitCode=0:0 WorkDir=/tmp/a b StdErr=/tmp/a b/e-12.out StdOut=/tmp/a b/o-12.out Power=\n"
    )
    row = parse_scontrol_jobs(text)["12"]
    assert row["JobName"] == "my job"
    assert row["StdOut"] == "/tmp/a b/o-12.out"
    assert row["JobState"] == "RUNNING"


def test_filename_patterns_expand_like_sbatch() -> None:
    assert expand_filename_pattern("neox-training-%j.out", "42", raw_id="42") == (
        "neox-training-42.out"
    )
    assert expand_filename_pattern("s-%A_%a.%x.%%", "6_1", raw_id="7", job_name="n") == "s-6_1.n.%"
    assert expand_filename_pattern("%j-%5j", "6_1", raw_id="7") == "7-00007"
    assert expand_filename_pattern("%u@%N", "3", user="ann", first_node="gpu-001") == "ann@gpu-001"


def _job(state: str, job_id: str = "4242", **kw: object) -> JobRecord:
    return JobRecord(job_id=job_id, raw_id=job_id, name="pythia", user="ann", state=state, **kw)  # type: ignore[arg-type]


def _log(tmp_path: Path, name: str, age: float = 0.0) -> Path:
    path = tmp_path / name
    shutil.copy(DATA / name, path)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.parametrize(
    ("state", "log", "verdict", "diagnosis"),
    [
        ("RUNNING", "gptneox_running.log", "RUNNING", None),
        ("RUNNING", "crashed_exception.log", "CRASHED", "Python exception: ValueError"),
        ("RUNNING", "nccl_timeout.log", "CRASHED", "NCCL failure"),
        ("RUNNING", "cuda_oom.log", "CRASHED", "CUDA out of memory"),
        ("RUNNING", "nan_loss.log", "CRASHED", "NaN/inf loss"),
        ("COMPLETED", "neoxtrain_completed.log", "COMPLETED", None),
        ("FAILED", "crashed_exception.log", "FAILED", "Python exception: ValueError"),
        ("TIMEOUT", "time_limit.log", "TIMEOUT", "SLURM time limit"),
        ("CANCELLED", "cancelled.log", "CANCELLED", "cancelled"),
        ("OUT_OF_MEMORY", "gptneox_running.log", "OUT_OF_MEMORY", "host out of memory"),
        ("NODE_FAIL", "gptneox_running.log", "NODE_FAIL", "node failure"),
    ],
)
def test_verdicts_of_recorded_logs(
    tmp_path: Path, state: str, log: str, verdict: str, diagnosis: str | None
) -> None:
    status = classify(_job(state), _log(tmp_path, log), stale_after=600)
    assert status.verdict == verdict
    if diagnosis is None:
        assert status.diagnosis is None
    else:
        assert status.diagnosis is not None and status.diagnosis.startswith(diagnosis)
    assert status.healthy == (verdict in {"RUNNING", "COMPLETED"})


def test_running_job_with_an_old_log_is_stale(tmp_path: Path) -> None:
    log = _log(tmp_path, "gptneox_running.log", age=900)
    status = classify(_job("RUNNING"), log, stale_after=600)
    assert status.verdict == "STALE" and not status.healthy
    assert status.diagnosis == "stale: log unchanged for 15m00s"
    assert classify(_job("RUNNING"), log, stale_after=1200).verdict == "RUNNING"


def test_progress_and_loss_in_the_row(tmp_path: Path) -> None:
    status = classify(_job("RUNNING"), _log(tmp_path, "gptneox_running.log"))
    assert (status.iteration, status.total, status.percent) == (1500, 320000, 0.5)
    assert status.loss == pytest.approx(2.173444)
    done = classify(_job("COMPLETED"), _log(tmp_path, "neoxtrain_completed.log"))
    assert done.percent == 100.0


def test_failed_job_without_a_log_names_its_exit_code() -> None:
    status = classify(_job("FAILED", exit_code=7), None)
    assert status.diagnosis == "exit code: the job exited with status 7"
    assert status.log is None and not status.healthy


def test_logs_are_found_by_configured_folder_and_pattern(tmp_path: Path) -> None:
    shutil.copy(DATA / "gptneox_running.log", tmp_path / "run-4242.log")
    job = _job("RUNNING", work_dir="/nonexistent")
    assert find_log(job, LogSettings(tmp_path, "neox-training-%j.out")) is None
    assert find_log(job, LogSettings(tmp_path, "run-%j.log")) == tmp_path / "run-4242.log"


def test_slurm_reported_path_comes_first_and_relative_paths_use_workdir(tmp_path: Path) -> None:
    (tmp_path / "own-4242.txt").write_text("x\n")
    (tmp_path / "neox-training-4242.out").write_text("y\n")
    job = _job("RUNNING", work_dir=str(tmp_path), stdout="own-%j.txt")
    settings = LogSettings(None, "neox-training-%j.out")
    assert find_log(job, settings) == tmp_path / "own-4242.txt"
    candidates = log_candidates(job, settings)
    assert candidates == [
        tmp_path / "own-4242.txt",
        tmp_path / "neox-training-4242.out",
        tmp_path / "logs" / "neox-training-4242.out",
        tmp_path / "slurm-4242.out",
    ]


def test_log_settings_come_from_flag_then_env_then_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neox_slurm.log_location import log_settings

    profile = load_profile("generic")
    monkeypatch.delenv("NEOX_SLURM_LOG_DIR", raising=False)
    monkeypatch.delenv("NEOX_SLURM_LOG_PATTERN", raising=False)
    assert log_settings(profile) == LogSettings(None, "neox-training-%j.out")
    monkeypatch.setenv("NEOX_SLURM_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("NEOX_SLURM_LOG_PATTERN", "e-%j.log")
    assert log_settings(profile) == LogSettings(tmp_path, "e-%j.log")
    assert log_settings(profile, "/x", "f-%j") == LogSettings(Path("/x"), "f-%j")


def test_table_and_json_hold_one_row_per_job(tmp_path: Path) -> None:
    for name in ("gptneox_running.log", "crashed_exception.log"):
        shutil.copy(DATA / name, tmp_path / name)
    records = [
        _job("RUNNING", "1", stdout=str(tmp_path / "gptneox_running.log")),
        _job("RUNNING", "2", stdout=str(tmp_path / "crashed_exception.log")),
        _job("PENDING", "3"),
    ]
    statuses = statuses_of(records, LogSettings(None, "neox-training-%j.out"))
    table = render_table(statuses).splitlines()
    assert table[0].split() == [
        "JOBID", "NAME", "KIND", "STATE", "VERDICT", "ELAPSED", "ITER", "%", "LOSS", "DIAGNOSIS",
    ]  # fmt: skip
    assert table[1].split()[:8] == [
        "1", "pythia", "-", "RUNNING", "RUNNING", "-", "1500/320000", "0.5",
    ]  # fmt: skip
    assert "CRASHED" in table[2] and "ValueError: sequence length 4096" in table[2]
    assert table[3].split()[4] == "PENDING"
    rows = json.loads(render_json(statuses))
    assert [r["verdict"] for r in rows] == ["RUNNING", "CRASHED", "PENDING"]
    assert rows[0]["iteration"] == 1500 and rows[0]["healthy"] is True


def test_traceback_in_a_separate_stderr_file_is_seen(tmp_path: Path) -> None:
    from neox_slurm.log_location import find_error_log

    out = _log(tmp_path, "gptneox_running.log", age=5)
    err = tmp_path / "err-4242.txt"
    err.write_text(
        'Traceback (most recent call last):\n  File "train.py", line 3\n'
        "KeyError: 'attention.dense.weight'\n"
    )
    job = _job("RUNNING", work_dir=str(tmp_path), stdout=str(out), stderr="err-%j.txt")
    assert find_error_log(job, out) == err
    assert find_error_log(job, err) is None
    status = classify(job, out, err, stale_after=600)
    assert status.verdict == "CRASHED"
    assert status.diagnosis == "Python exception: KeyError: 'attention.dense.weight'"
    assert (status.iteration, status.error_log) == (1500, str(err))
    assert status.log_age_s is not None and status.log_age_s < 5  # stderr is the fresher file


def test_submissions_are_recorded_and_found_after_slurm_forgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neox_slurm.job_index import index_path, record_submission, recorded_logs

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert recorded_logs() == {}
    log = tmp_path / "elsewhere" / "run.txt"
    log.parent.mkdir()
    log.write_text(" iteration 5/10 | lm_loss: 1.0E+00 |\n")
    record_submission("77", tmp_path / "old.out", tmp_path / "old.sbatch")
    record_submission("77", log, tmp_path / "run.sbatch")  # a resubmission: the latest wins
    assert index_path() == tmp_path / "state" / "neox-slurm" / "submitted.tsv"
    assert recorded_logs() == {"77": log}
    # SLURM 22.05 accounting knows no StdOut and the pattern finds nothing: the record does.
    job = _job("COMPLETED", "77", work_dir=str(tmp_path))
    (status,) = statuses_of([job], LogSettings(None, "neox-training-%j.out"))
    assert status.log == str(log) and status.iteration == 5


def test_pending_job_shows_why_it_waits() -> None:
    status = classify(_job("PENDING", reason="Dependency"), None)
    assert (status.verdict, status.healthy) == ("PENDING", True)
    assert status.diagnosis == "waiting: Dependency"
    assert classify(_job("PENDING", reason="None"), None).diagnosis is None


def test_a_reused_job_id_lists_the_old_and_the_live_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on a test cluster whose controller state was reset while accounting kept its rows:
    sacct's row for id 31 is an older, finished job; squeue's job 31 must still be listed."""
    from neox_slurm import jobs

    old = JobRecord("31", "31", "old-run", "ann", "COMPLETED")
    live = JobRecord("31", "31", "convert_exp", "ann", "PENDING", reason="Dependency")
    monkeypatch.setattr(jobs, "query_sacct", lambda **kw: [old])
    monkeypatch.setattr(jobs, "query_squeue", lambda **kw: [live])
    listed = jobs.list_jobs()
    assert [(r.name, r.state) for r in listed] == [
        ("old-run", "COMPLETED"), ("convert_exp", "PENDING"),
    ]  # fmt: skip
    assert [r.name for r in jobs.list_jobs(name_pattern="convert_*")] == ["convert_exp"]
