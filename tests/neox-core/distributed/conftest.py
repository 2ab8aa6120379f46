"""Shared helpers for multi-process tests: launch a worker script under torchrun (gloo, CPU).

Use the `torchrun` fixture: `run = torchrun(workers / "x.py", 2, "--flag", "value")`, then check
`run.returncode` (stdout and stderr are captured as text). A module runs as
`torchrun("-m", 2, "neox_core.cli", "cfg.yml")`. Worker scripts live in `workers/`
and may import `workers/_common.py` (tiny model configs, process-group setup) by putting
their own folder on `sys.path`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

WORKERS = Path(__file__).parent / "workers"


def run_torchrun(
    script: Path | str, nproc: int, *args: str, timeout: float = 300, cuda: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python -m torch.distributed.run` with `nproc` processes on a free local port; CUDA is
    hidden from them unless `cuda`."""
    # --standalone: torchrun binds a free port itself (a port picked here and bound later can
    # be taken in between when several runs start at once)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
        str(nproc), str(script), *args,
    ]  # fmt: skip
    # one thread per rank: the machine is small and ranks would fight over cores
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_torchrun


@pytest.fixture
def workers() -> Path:
    """The folder of worker scripts (`workers/`)."""
    return WORKERS
