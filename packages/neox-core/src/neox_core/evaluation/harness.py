"""Running lm-evaluation-harness tasks on a neox model: results JSON, summary table, scalars.

Tasks are the harness's by name, plus local tasks from `eval_include_path` (a task YAML with a
local JSONL, for clusters without internet). One failing task is reported by name and the
others still run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class HarnessReport:
    results: dict[str, Any] | None  # the harness's result dict (None if every task failed)
    failures: dict[str, str] = field(default_factory=dict)  # task -> error message
    path: Path | None = None  # where the JSON was written


def results_path(prefix: str, iteration: int, default_dir: str | Path | None) -> Path:
    """`<prefix>_global_step<N>.json`; a bare prefix (no folder) goes in `default_dir`."""
    name = prefix or "eval_results"
    p = Path(name)
    if default_dir is not None and p.parent == Path("."):
        p = Path(default_dir) / p
    return p.with_name(f"{p.name}_global_step{iteration}.json")


def _write_json(path: Path, obj: Any) -> None:
    from lm_eval.utils import handle_non_serializable

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=handle_non_serializable, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def metric_scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """`eval/<task>/<metric>` -> value for every finite numeric metric (filters kept apart)."""
    out: dict[str, float] = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if key == "alias" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, _, filt = key.partition(",")
            if "_stderr" in metric or not math.isfinite(float(value)):
                continue
            name = metric if filt in ("", "none") else f"{metric}_{filt}"
            out[f"eval/{task}/{name}"] = float(value)
    return out


def _merge(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    if into is None:
        return part
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        if isinstance(part.get(key), dict):
            into.setdefault(key, {}).update(part[key])
    return into


@functools.cache
def task_manager(include_path: str | None = None) -> Any:
    """lm-eval's TaskManager for the built-in tasks plus `include_path`, built once a process.

    Building one indexes every task lm-eval ships (tens of seconds); a training run that
    evaluates at every eval interval reuses the index instead of rebuilding it each time.
    """
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def run_tasks(
    lm: Any,
    tasks: Sequence[str],
    *,
    include_path: str | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    bootstrap_iters: int = 100_000,
    seed: int = 1234,
    log: Callable[[str], None] = print,
) -> HarnessReport:
    """Evaluate `lm` on each task in turn; a task that raises is logged and skipped."""
    from lm_eval import simple_evaluate

    manager = task_manager(include_path)
    known = set(manager.all_tasks)
    report = HarnessReport(None)
    for task in tasks:
        if task not in known:
            report.failures[task] = f"unknown task {task!r}" + (
                "" if include_path else " (no eval_include_path set)"
            )
            log(f"eval_tasks: task {task} failed: {report.failures[task]}")
            continue
        try:
            part = simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=manager,
                num_fewshot=num_fewshot,
                limit=limit,
                bootstrap_iters=bootstrap_iters,
                log_samples=False,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        except Exception as e:
            report.failures[task] = f"{type(e).__name__}: {e}"
            log(f"eval_tasks: task {task} failed: {report.failures[task]}")
            continue
        if part is not None:
            report.results = _merge(report.results, dict(part))
    return report


def summarise(report: HarnessReport) -> str:
    """The harness's own results table, plus a line per failed task."""
    lines = []
    if report.results is not None:
        from lm_eval.utils import make_table

        lines.append(make_table(report.results))
    lines += [f"FAILED {task}: {why}" for task, why in report.failures.items()]
    return "\n".join(lines)


def save_report(report: HarnessReport, path: Path) -> None:
    """The harness's JSON (plus neox's `failures`) at `path`, written atomically."""
    obj = dict(report.results or {})
    obj["failures"] = dict(report.failures)
    _write_json(path, obj)
    report.path = path
