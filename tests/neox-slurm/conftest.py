"""The real SLURM for the `slurm` tests: use the one that answers, or skip cleanly.

By default the fixture only looks. With NEOX_SLURM_UP=1 (and root) it first runs `.ci/slurm-up`,
which starts the daemons and installs their packages with apt where they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _controller_answers() -> str | None:
    """None when a controller and an idle-able node answer, else why not."""
    if shutil.which("scontrol") is None or shutil.which("sinfo") is None:
        return "SLURM client commands are not installed"
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=15, check=False
        )
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer"
    if "UP" not in ping.stdout:
        return f"no SLURM controller answers: {(ping.stdout + ping.stderr).strip()}"
    states = nodes.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"no usable SLURM node (sinfo: {' '.join(states) or 'nothing'})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    why = _controller_answers()
    if why is not None and os.environ.get("NEOX_SLURM_UP") == "1" and os.geteuid() == 0:
        subprocess.run([str(ROOT / ".ci" / "slurm-up")], check=False, timeout=600)
        why = _controller_answers()
    if why is not None:
        pytest.skip(f"{why} (bring one up with .ci/slurm-up as root)")


@pytest.fixture(autouse=True)
def _own_submission_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests off the user's record of submitted jobs (~/.local/state/neox-slurm)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
