"""Why a job died (or is dying), read from the tail of its log.

Crash signs follow the GPT-NeoX users' convention (`traceback|exception|error:` in the last 100
lines); the diagnosis then names the most specific cause it can find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from neox_slurm.training_log import is_bad_loss, last_iteration

CRASH_WINDOW = 100

_CRASH_SIGN = re.compile(r"traceback|\bexception\b|\berror:", re.IGNORECASE)
_CUDA_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED")
_NCCL = re.compile(
    r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|ncclRemoteError"
    r"|ProcessGroupNCCL.*(?:timeout|Timeout|error)|Watchdog caught collective operation timeout"
    r"|NCCL WARN|NCCL communicator was aborted|DistBackendError"
)
_TIME_LIMIT = re.compile(r"DUE TO TIME LIMIT")
_NODE_FAIL = re.compile(r"DUE TO NODE FAIL")
_CANCELLED = re.compile(r"\*\*\* (?:JOB|STEP) [\d.]+ (?:ON \S+ )?CANCELLED AT (\S+)(.*?)\*\*\*")
_HOST_OOM = re.compile(r"oom[-_]kill|out-of-memory handler|Killed process \d+", re.IGNORECASE)
_TASK_EXIT = re.compile(
    r"srun: error: .*tasks? [\d,-]+: (?:Exited with exit code|Killed|Terminated)"
)
_BAD_LOSS_WORDS = re.compile(r"\bloss\b[^|]*\b(?:nan|inf)\b", re.IGNORECASE)
_EXCEPTION = re.compile(
    r"^\s*(?:\[rank\d+\]:?\s*)?(?:\d+:\s*)?"
    r"((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Interrupt|Exit|Failure|Fault))"
    r"(?::\s*(.*))?$"
)
# Launchers wrap the real error; prefer the cause they report.
_WRAPPERS = {"ChildFailedError", "CalledProcessError", "SystemExit", "KeyboardInterrupt"}


@dataclass(frozen=True)
class Diagnosis:
    """A cause (`kind`) and the log line or fact that shows it."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


def _short(line: str, limit: int = 200) -> str:
    line = line.strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _python_exception(lines: list[str], need_traceback: bool = True) -> Diagnosis | None:
    seen_traceback = not need_traceback
    found: list[tuple[str, str]] = []
    for line in lines:
        if "Traceback (most recent call last)" in line:
            seen_traceback = True
            continue
        if not seen_traceback:
            continue
        match = _EXCEPTION.match(line)
        if match:
            name = match.group(1)
            found.append((name, (match.group(2) or "").strip()))
    if not found:
        return None
    real = [f for f in found if f[0].rsplit(".", 1)[-1] not in _WRAPPERS]
    name, message = (real or found)[-1]
    return Diagnosis("Python exception", _short(f"{name}: {message}" if message else name))


# Cheap substring tests (on the lower-cased tail) that must pass before a pattern can match
# anywhere: a healthy log then costs a few `in` checks instead of a regex per line.
_KEYS: dict[re.Pattern[str], tuple[str, ...]] = {
    _CRASH_SIGN: ("traceback", "exception", "error:"),
    _CUDA_OOM: ("out of memory", "outofmemory", "cublas_status_alloc_failed"),
    _NCCL: ("nccl", "watchdog", "distbackenderror"),
    _TIME_LIMIT: ("due to time limit",),
    _NODE_FAIL: ("due to node fail",),
    _CANCELLED: ("cancelled at",),
    _HOST_OOM: ("oom", "out-of-memory", "killed process"),
    _BAD_LOSS_WORDS: ("nan", "inf"),
    _TASK_EXIT: ("srun: error",),
}


class _Tail:
    """A log tail with its lower-cased text, so each pattern is tried only where it can match."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.lower = "\n".join(lines).lower()

    def may_match(self, pattern: re.Pattern[str]) -> bool:
        return any(key in self.lower for key in _KEYS[pattern])

    def matching(self, pattern: re.Pattern[str]) -> list[str]:
        if not self.may_match(pattern):
            return []
        return [line for line in self.lines if pattern.search(line)]


def _last_match(pattern: re.Pattern[str], tail: _Tail) -> str | None:
    found = tail.matching(pattern)
    return found[-1] if found else None


def _first_match(pattern: re.Pattern[str], tail: _Tail) -> str | None:
    found = tail.matching(pattern)
    return found[0] if found else None


def diagnose(lines: list[str], window_size: int = CRASH_WINDOW) -> Diagnosis | None:
    """The most specific cause of failure in the last WINDOW_SIZE of LINES (a log tail)."""
    window = lines[-window_size:]
    tail = _Tail(window)
    # The first NCCL or OOM line is the cause; later ones are other ranks reacting to it.
    if (line := _first_match(_CUDA_OOM, tail)) is not None:
        return Diagnosis("CUDA out of memory", _short(line))
    if (line := _first_match(_NCCL, tail)) is not None:
        return Diagnosis("NCCL failure", _short(line))
    last = last_iteration(lines)
    if last is not None and is_bad_loss(last.loss):
        return Diagnosis("NaN/inf loss", f"loss {last.loss} at iteration {last.iteration}")
    if last is not None and last.nan_iterations:
        return Diagnosis(
            "NaN/inf loss",
            f"{last.nan_iterations} NaN iterations before iteration {last.iteration}",
        )
    if last is None and (line := _last_match(_BAD_LOSS_WORDS, tail)) is not None:
        return Diagnosis("NaN/inf loss", _short(line))
    if _last_match(_TIME_LIMIT, tail) is not None:
        return Diagnosis("SLURM time limit", "the job reached its time limit")
    if _last_match(_NODE_FAIL, tail) is not None:
        return Diagnosis("node failure", "SLURM reports a node failure")
    if (line := _last_match(_HOST_OOM, tail)) is not None:
        return Diagnosis("host out of memory", _short(line))
    errors = tail.matching(_CRASH_SIGN)
    if errors:
        exception = _python_exception(window) or _python_exception(window, need_traceback=False)
        if exception is not None:
            return exception
    if (line := _last_match(_CANCELLED, tail)) is not None:
        return Diagnosis("cancelled", _short(line))
    # srun's "task N: Exited with exit code C" only echoes a failure; prefer any other error.
    if errors:
        own = [line for line in errors if not _TASK_EXIT.search(line)]
        if own:
            return Diagnosis("error", _short(own[-1]))
        return Diagnosis("task exit", _short(errors[-1]))
    return None


def shows_crash(lines: list[str], window_size: int = CRASH_WINDOW) -> bool:
    """Whether a log tail carries the signs of a crash (the GPT-NeoX users' grep)."""
    tail = _Tail(lines[-window_size:])
    return any(tail.matching(p) for p in (_CRASH_SIGN, _CUDA_OOM, _NCCL))
