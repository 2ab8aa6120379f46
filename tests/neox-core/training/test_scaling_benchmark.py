"""benchmarks/scaling.py runs its torchrun children end to end (tiny model, CPU, gloo).

The GPU/NCCL rows need lent multi-GPU machines; this covers the launch, the worker's use of
neox-train's launch and build path, the RESULT protocol and the table, at 1 and 2 processes.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _table(out: str) -> dict[tuple[str, int], dict[str, str]]:
    """The last table's rows by (case, processes), cells by column name."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("case "))
    head = [h.strip() for h in lines[start].split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == len(head):
            row = dict(zip(head, cells, strict=True))
            rows[(row["case"], int(row["GPUs"]))] = row
    return rows


@pytest.mark.slow
def test_scaling_benchmark_smoke() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NCCL_NVLS_ENABLE"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "NCCL_NVLS_ENABLE=0" in out  # set for the children unless the user set it
    rows = _table(out)
    assert sorted(rows) == [("dp-1B", 1), ("dp-1B", 2), ("tp2-7B", 2)]
    one, two, tp = rows[("dp-1B", 1)], rows[("dp-1B", 2)], rows[("tp2-7B", 2)]
    assert two["layout"] == "DP 2 x TP 1 x PP 1, ZeRO 1, bf16 gathers"  # the bf16 default
    assert tp["layout"] == "DP 1 x TP 2 x PP 1, ZeRO 0"
    for row in (one, two, tp):
        tokens = float(row["tokens/s"].replace(",", ""))
        assert math.isfinite(tokens) and tokens > 0, row
        assert float(row["est GiB"]) >= 0, row
    assert float(one["eff %"]) == 100.0
    eff = float(two["eff %"])
    assert math.isfinite(eff) and eff > 0, two


@pytest.mark.slow
def test_scaling_benchmark_prints_what_it_measured_when_terminated() -> None:
    """SIGTERM after the first row: the row in flight is killed, the table still printed."""
    env = {k: v for k, v in os.environ.items() if k != "NCCL_NVLS_ENABLE"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--smoke"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen = []
    deadline = time.monotonic() + 600
    assert proc.stdout is not None
    for line in proc.stdout:  # until the first row's summary line
        seen.append(line)
        if line.startswith("  dp-1B x1:") or time.monotonic() > deadline:
            break
    time.sleep(2)  # the second row's children are starting
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    out = "".join(seen) + rest
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:] + err[-3000:]
    rows = _table(out)
    assert sorted(rows) == [("dp-1B", 1), ("dp-1B", 2), ("tp2-7B", 2)]
    assert float(rows[("dp-1B", 1)]["tokens/s"].replace(",", "")) > 0
    assert "terminated while running" in rows[("dp-1B", 2)]["step ms"]
    assert "not run: terminated" in rows[("tp2-7B", 2)]["step ms"]


def test_time_breakdown_separates_overlapped_exposed_communication_and_idle() -> None:
    """--profile's breakdown from kernel spans (µs): NCCL time overlapped by compute is not
    exposed, NCCL time alone is, and time with no kernel is idle."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scaling import time_breakdown

    spans = [
        (0.0, 4000.0, "sm90_xmma_gemm_bf16"),  # matmul 0-4 ms
        (3000.0, 6000.0, "ncclDevKernel_ReduceScatter_Sum_f32"),  # 1 ms overlapped, 2 alone
        (7000.0, 8000.0, "multi_tensor_apply_kernel adam"),  # optimizer; 1 + 2 ms idle
    ]
    ms = time_breakdown(spans, wall_us=10_000.0, steps=2)
    assert ms["matmul"] == 2.0 and ms["optimizer"] == 0.5  # per step
    assert ms["comm"] == 1.5 and ms["exposed comm"] == 1.0
    assert ms["idle"] == 1.5 and ms["wall"] == 5.0
