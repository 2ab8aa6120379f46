"""Loss and throughput over a run: a terminal sparkline and, on request, a PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from neox_slurm.training_log import IterationRecord

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """VALUES as block characters, averaged into at most WIDTH buckets; NaN/inf show as `!`."""
    if not values:
        return ""
    buckets: list[float] = []
    step = max(1, math.ceil(len(values) / width))
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        buckets.append(
            math.nan if any(not math.isfinite(v) for v in chunk) else sum(chunk) / len(chunk)
        )
    finite = [v for v in buckets if math.isfinite(v)]
    if not finite:
        return "!" * len(buckets)
    low, high = min(finite), max(finite)
    span = high - low
    chars = []
    for value in buckets:
        if not math.isfinite(value):
            chars.append("!")
        elif span == 0:
            chars.append(_BARS[len(_BARS) // 2])
        else:
            chars.append(_BARS[min(len(_BARS) - 1, int((value - low) / span * len(_BARS)))])
    return "".join(chars)


def _series(records: Sequence[IterationRecord], attr: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in records:
        value = getattr(record, attr)
        if value is not None:
            xs.append(record.iteration)
            ys.append(value)
    return xs, ys


def throughput_attr(records: Sequence[IterationRecord]) -> tuple[str, str]:
    """Which throughput the log reports: tokens/s where present, else samples/s."""
    if any(r.tokens_per_sec is not None for r in records):
        return "tokens_per_sec", "tokens/s"
    return "samples_per_sec", "samples/s"


def summary(records: Sequence[IterationRecord], width: int = 60) -> str:
    """The text `neox-slurm progress` prints."""
    if not records:
        return "no iteration lines in the log yet"
    last = records[-1]
    lines = [
        f"iteration {last.iteration}/{last.total}"
        + (f" ({100 * last.iteration / last.total:.1f}%)" if last.total else "")
    ]
    _, losses = _series(records, "loss")
    if losses:
        lines.append(
            f"loss        {sparkline(losses, width)}  first {losses[0]:.4g}  last {losses[-1]:.4g}"
            f"  min {min((v for v in losses if math.isfinite(v)), default=math.nan):.4g}"
        )
    attr, label = throughput_attr(records)
    _, speed = _series(records, attr)
    if speed:
        lines.append(
            f"{label:<11} {sparkline(speed, width)}  last {speed[-1]:.4g}"
            f"  mean {sum(speed) / len(speed):.4g}"
        )
    _, ms = _series(records, "ms_per_iteration")
    if ms:
        remaining = (last.total - last.iteration) * ms[-1] / 1000.0
        hours, rest = divmod(int(remaining), 3600)
        lines.append(f"ms/iter     last {ms[-1]:.1f}  remaining about {hours}h{rest // 60:02d}m")
    return "\n".join(lines)


def plot_png(records: Sequence[IterationRecord], path: Path, title: str) -> None:
    """Loss and throughput against iteration, written to PATH as a PNG (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(
            "--plot needs matplotlib: install neox-slurm[plot] (pip install 'neox-slurm[plot]')"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax_loss, ax_speed) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    xs, losses = _series(records, "loss")
    ax_loss.plot(xs, losses, color="tab:blue")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(title)
    attr, label = throughput_attr(records)
    xs, speed = _series(records, attr)
    ax_speed.plot(xs, speed, color="tab:green")
    ax_speed.set_ylabel(label)
    ax_speed.set_xlabel("iteration")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
