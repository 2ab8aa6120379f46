"""Job records from SLURM: `sacct` when accounting is there, `squeue` when it is not."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from neox_slurm.slurm_commands import SlurmError, run_slurm

_SACCT_FIELDS = [
    "JobID",
    "JobIDRaw",
    "JobName",
    "User",
    "State",
    "ExitCode",
    "Elapsed",
    "Start",
    "End",
    "WorkDir",
    "NodeList",
    "Timelimit",
    "Reason",
]
_SQUEUE_FIELDS = [
    "JobID",
    "JobArrayID",
    "Name",
    "UserName",
    "State",
    "TimeUsed",
    "StartTime",
    "WorkDir",
    "NodeList",
    "TimeLimit",
    "Reason",
    "STDOUT",
    "STDERR",
]
_ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "CONFIGURING", "COMPLETING"}
)
_SEP = "\x1f"  # a unit separator: cannot appear in job names from the shell by accident


@dataclass
class JobRecord:
    """One job as SLURM reports it; `stdout` may still hold sbatch's `%j`-style patterns."""

    job_id: str
    raw_id: str
    name: str
    user: str
    state: str
    exit_code: int | None = None
    exit_signal: int | None = None
    elapsed: str = ""
    start: str = ""
    end: str = ""
    work_dir: str = ""
    node_list: str = ""
    time_limit: str = ""
    reason: str = ""
    stdout: str = ""
    stderr: str = ""
    source: str = "sacct"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def first_node(self) -> str:
        match = re.match(r"([^,\[]+)(?:\[(\d+))?", self.node_list)
        if not match or self.node_list in ("None assigned", "(null)"):
            return ""
        return match.group(1) + (match.group(2) or "")


def _exit_code(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def base_state(state: str) -> str:
    """`CANCELLED by 0` -> `CANCELLED`; `RUNNING` stays."""
    return state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"


def parse_sacct(text: str, fields: list[str]) -> list[JobRecord]:
    """Records from `sacct --parsable2 --noheader` output with FIELDS in this order."""
    records = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != len(fields):
            # A job name holding `|` shifts the columns; keep the outer fields in place.
            extra = len(values) - len(fields)
            if extra < 0:
                raise SlurmError(f"sacct output line {line_no} has too few fields: {line!r}")
            name_at = fields.index("JobName")
            values[name_at : name_at + extra + 1] = [
                "|".join(values[name_at : name_at + extra + 1])
            ]
        row = dict(zip(fields, values, strict=True))
        code, sig = _exit_code(row.get("ExitCode", ""))
        records.append(
            JobRecord(
                job_id=row["JobID"],
                raw_id=row.get("JobIDRaw", row["JobID"]),
                name=row.get("JobName", ""),
                user=row.get("User", ""),
                state=base_state(row.get("State", "")),
                exit_code=code,
                exit_signal=sig,
                elapsed=row.get("Elapsed", ""),
                start=row.get("Start", ""),
                end=row.get("End", ""),
                work_dir=row.get("WorkDir", ""),
                node_list=row.get("NodeList", ""),
                time_limit=row.get("Timelimit", ""),
                reason=row.get("Reason", ""),
                stdout=row.get("StdOut", ""),
                stderr=row.get("StdErr", ""),
                source="sacct",
            )
        )
    return records


def parse_squeue(text: str) -> list[JobRecord]:
    """Records from `squeue --noheader --Format` output of _SQUEUE_FIELDS."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(_SEP)]
        if values and values[-1] == "":
            values.pop()
        if len(values) != len(_SQUEUE_FIELDS):
            raise SlurmError(f"squeue output has {len(values)} fields, expected: {line!r}")
        row = dict(zip(_SQUEUE_FIELDS, values, strict=True))
        records.append(
            JobRecord(
                job_id=row["JobArrayID"] or row["JobID"],
                raw_id=row["JobID"],
                name=row["Name"],
                user=row["UserName"],
                state=base_state(row["State"]),
                elapsed=row["TimeUsed"],
                start=row["StartTime"],
                work_dir=row["WorkDir"],
                node_list=row["NodeList"],
                time_limit=row["TimeLimit"],
                reason=row["Reason"],
                stdout=row["STDOUT"],
                stderr=row["STDERR"],
                source="squeue",
            )
        )
    return records


_stdout_field_supported: bool | None = None


def query_sacct(
    *,
    user: str | None = None,
    all_users: bool = False,
    since: str = "now-1days",
    job_ids: list[str] | None = None,
) -> list[JobRecord]:
    """Allocation records (`sacct -X`) for the selection; log paths too where SLURM has them
    (StdOut/StdErr, 23.02+)."""
    global _stdout_field_supported
    selection = ["--starttime", since]
    if job_ids:
        selection = ["--jobs", ",".join(job_ids)]
    if user:
        selection += ["--user", user]
    elif all_users:
        selection += ["--allusers"]
    tries = [True, False] if _stdout_field_supported is not False else [False]
    for with_stdout in tries:
        fields = [*_SACCT_FIELDS, "StdOut", "StdErr"] if with_stdout else _SACCT_FIELDS
        args = ["sacct", "-X", "-P", "-n", "--format", ",".join(fields), *selection]
        try:
            text = run_slurm(args)
        except SlurmError as exc:
            if with_stdout and "Invalid field" in str(exc):
                _stdout_field_supported = False
                continue
            raise
        _stdout_field_supported = with_stdout
        return parse_sacct(text, fields)
    raise AssertionError("unreachable")


def query_squeue(
    *, user: str | None = None, job_ids: list[str] | None = None, all_users: bool = True
) -> list[JobRecord]:
    """Queued and running jobs from the controller (no accounting needed)."""
    fmt = ",".join(f"{name}:{_SEP}" for name in _SQUEUE_FIELDS)
    args = ["squeue", "--noheader", "--array", "--Format", fmt]
    if job_ids:
        args += ["--jobs", ",".join(job_ids)]
    if user:
        args += ["--user", user]
    elif not all_users:
        import getpass

        args += ["--user", getpass.getuser()]
    return parse_squeue(run_slurm(args))


def list_jobs(
    *,
    user: str | None = None,
    all_users: bool = False,
    since: str = "now-1days",
    name_pattern: str | None = None,
    job_ids: list[str] | None = None,
) -> list[JobRecord]:
    """Jobs from sacct, or from squeue when accounting is not available, filtered by name glob."""
    try:
        records = query_sacct(user=user, all_users=all_users, since=since, job_ids=job_ids)
    except SlurmError as sacct_error:
        try:
            records = query_squeue(user=user, job_ids=job_ids, all_users=all_users)
        except SlurmError:
            raise sacct_error from None
    else:
        records = _with_unrecorded_active_jobs(records, user, all_users, job_ids)
    if name_pattern:
        records = [r for r in records if fnmatch.fnmatchcase(r.name, name_pattern)]
    return records


def _with_unrecorded_active_jobs(
    records: list[JobRecord], user: str | None, all_users: bool, job_ids: list[str] | None
) -> list[JobRecord]:
    """Correct accounting with the controller's view of queued and running jobs: slurmdbd lags
    behind (a new job is missing, a pending job's reason or a started job's state is old)."""
    try:
        active = query_squeue(user=user, job_ids=job_ids, all_users=all_users)
    except SlurmError:
        return records  # the controller is down; accounting is what we have
    by_id = {r.raw_id: r for r in active}
    merged = []
    for record in records:
        live = by_id.get(record.raw_id)
        if live is not None and record.state not in _ACTIVE_STATES and live.name != record.name:
            # a job id used again (the controller's state was reset, or ids wrapped at
            # MaxJobId): accounting's row is an older job; the live one is listed apart
            merged.append(record)
            continue
        by_id.pop(record.raw_id, None)
        if live is not None and record.state in _ACTIVE_STATES:
            record.state, record.reason, record.elapsed = live.state, live.reason, live.elapsed
            record.node_list = live.node_list or record.node_list
            record.stdout = record.stdout or live.stdout
            record.stderr = record.stderr or live.stderr
        merged.append(record)
    # accounting lists a pending array as one row `123_[0-99]`; squeue lists its tasks
    pending_arrays = {r.job_id.split("_")[0] for r in records if "_[" in r.job_id}
    unrecorded = [
        r
        for r in active
        if r.raw_id in by_id
        and not (r.state == "PENDING" and r.job_id.split("_")[0] in pending_arrays)
    ]
    return merged + unrecorded


def record_from_scontrol(row: dict[str, str]) -> JobRecord:
    """A JobRecord from one `scontrol show job` entry."""
    array_job, array_task = row.get("ArrayJobId"), row.get("ArrayTaskId")
    job_id = f"{array_job}_{array_task}" if array_job and array_task else row["JobId"]
    code, sig = _exit_code(row.get("ExitCode", ""))
    return JobRecord(
        job_id=job_id,
        raw_id=row["JobId"],
        name=row.get("JobName", ""),
        user=row.get("UserId", "").split("(")[0],
        state=base_state(row.get("JobState", "")),
        exit_code=code,
        exit_signal=sig,
        elapsed=row.get("RunTime", ""),
        start=row.get("StartTime", ""),
        end=row.get("EndTime", ""),
        work_dir=row.get("WorkDir", ""),
        node_list=row.get("NodeList", ""),
        time_limit=row.get("TimeLimit", ""),
        reason=row.get("Reason", ""),
        stdout=row.get("StdOut", ""),
        stderr=row.get("StdErr", ""),
        source="scontrol",
    )


def scontrol_show_jobs(job_id: str | None = None) -> dict[str, dict[str, str]]:
    """`scontrol show job` as {raw job id: {key: value}}; jobs the controller still remembers."""
    args = ["scontrol", "show", "job", "--oneliner"]
    if job_id:
        args.append(job_id)
    try:
        text = run_slurm(args)
    except SlurmError as exc:
        if "Invalid job id" in str(exc):
            return {}
        raise
    return parse_scontrol_jobs(text)


_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=")


def parse_scontrol_jobs(text: str) -> dict[str, dict[str, str]]:
    """{JobId: fields} from `scontrol show job --oneliner` (values may hold spaces)."""
    jobs: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if "JobId=" not in line:
            continue
        keys = list(_KEY.finditer(line))
        row: dict[str, str] = {}
        for i, match in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
            row[match.group(1)] = line[match.end() : end].strip()
        jobs[row["JobId"]] = row
    return jobs
