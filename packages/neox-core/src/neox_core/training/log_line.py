"""The per-iteration log line, field for field as GPT-NeoX prints it.

Users' scripts grep it: `grep "iteration.*lm_loss"`, PCRE `iteration\\s+\\K[0-9]+` (the step),
`iteration\\s+[0-9]+/\\s*\\K[0-9]+` (train_iters), `lm_loss:\\s*\\K[0-9.E+-]+` (the loss). neox adds
tokens/sec, TFLOPS and MFU per GPU after GPT-NeoX's flops field; nothing else moves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from neox_core.training.throughput import human_flops


def format_train_line(
    *,
    iteration: int,
    train_iters: int,
    seconds_per_iteration: float,
    samples_per_iteration: int,
    tokens_per_iteration: int,
    learning_rate: float,
    flops_per_iteration: float,
    world_size: int,
    peak_flops: float,
    losses: Mapping[str, float],
    loss_scale: float | None,
    skipped_iterations: int,
    nan_iterations: int,
) -> str:
    flops_per_gpu = flops_per_iteration / max(seconds_per_iteration, 1e-12) / world_size
    parts = [
        f" samples/sec: {samples_per_iteration / seconds_per_iteration:.3f}",
        f" iteration {iteration:8d}/{train_iters:8d}",
        f" elapsed time per iteration (ms): {seconds_per_iteration * 1000.0:.1f}",
        f" learning rate: {learning_rate:.3E}",
        f" approx flops per GPU: {human_flops(flops_per_gpu)}",
        f" tokens/sec per GPU: {tokens_per_iteration / seconds_per_iteration / world_size:.1f}",
        f" TFLOPS per GPU: {flops_per_gpu / 1e12:.2f}",
        f" MFU: {100.0 * flops_per_gpu / peak_flops:.2f}%",
    ]
    parts += [f" {key}: {value:.6E}" for key, value in losses.items()]
    if loss_scale is not None:
        parts.append(f" loss scale: {loss_scale:.1f}")
    parts.append(f" number of skipped iterations: {skipped_iterations:3d}")
    parts.append(f" number of nan iterations: {nan_iterations:3d}")
    return " |".join(parts) + " |"


_ITERATION = re.compile(r"iteration\s+(\d+)/\s*(\d+)")
# "name: number[unit]", numbers as Python prints them (1.5E+00, 65536.0, NAN, -inf)
_FIELD = re.compile(
    r"^\s*([A-Za-z_][\w./ ()-]*?):\s*([-+]?(?:nan|inf|[0-9.]+(?:e[-+]?\d+)?))[a-z%]*\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TrainLine:
    """The numbers of one `format_train_line` line, read back (benchmarks and users' tools)."""

    iteration: int
    train_iters: int
    tokens_per_sec: float
    mfu_percent: float
    losses: dict[str, float]


def parse_train_lines(text: str) -> Iterator[TrainLine]:
    """Each per-iteration line in `text` (a log; other lines skipped), in order.

    Fields after MFU and before the loss scale are the losses (`lm_loss` and a plug-in's
    metrics), as `format_train_line` writes them.
    """
    for line in text.splitlines():
        it = _ITERATION.search(line)
        if it is None or "tokens/sec per GPU:" not in line:
            continue
        fields = {}
        for part in line.split("|"):
            m = _FIELD.match(part)
            if m:
                fields[m[1].strip()] = float(m[2])
        names = list(fields)
        start = names.index("MFU") + 1 if "MFU" in names else len(names)
        losses = {
            k: fields[k]
            for k in names[start:]
            if k != "loss scale" and not k.startswith("number of")
        }
        yield TrainLine(int(it[1]), int(it[2]), fields.get("tokens/sec per GPU", float("nan")),
                        fields.get("MFU", float("nan")), losses)  # fmt: skip


def format_eval_line(chart: str, prefix: str, results: Mapping[str, float]) -> str:
    """GPT-NeoX's evaluation summary (` validation results at iteration N | ...`), framed."""
    body = f" {chart} results at {prefix} | " + "".join(
        f"{k} value: {v:.6E} | " for k, v in results.items()
    )
    rule = "-" * (len(body) + 1)
    return f"{rule}\n{body}\n{rule}"


_EVAL_HEAD = re.compile(r"^\s*(\S+) results at (.+?)\s*$")
_EVAL_VALUE = re.compile(r"^\s*(.+?) value:\s*([-+]?(?:nan|inf|[0-9.]+(?:e[-+]?\d+)?))\s*$", re.I)


@dataclass(frozen=True)
class EvalLine:
    """One `format_eval_line` summary read back: its chart ("validation", "test"), where it
    was taken (`at`, e.g. "iteration 300"; `iteration` where that names one) and the values."""

    chart: str
    at: str
    iteration: int | None
    values: dict[str, float]


def parse_eval_lines(text: str) -> Iterator[EvalLine]:
    """Each evaluation summary in `text` (a log; rules and other lines skipped), in order."""
    for line in text.splitlines():
        parts = line.split("|")
        head = _EVAL_HEAD.match(parts[0].split("]: ")[-1])  # torchrun's "[rank0]: " prefix
        if head is None or len(parts) < 2:
            continue
        values = {m[1]: float(m[2]) for m in map(_EVAL_VALUE.match, parts[1:]) if m}
        if not values:
            continue
        it = re.fullmatch(r"iteration (\d+)", head[2])
        yield EvalLine(head[1], head[2], int(it[1]) if it else None, values)
