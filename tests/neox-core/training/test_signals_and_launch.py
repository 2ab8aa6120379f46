"""SIGTERM/SIGUSR1 finish the step, save and exit 0 (SLURM requeue); launch variables."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from neox_core.training.launch import read_launch_env


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)]
)
def test_signal_finishes_the_step_saves_and_exits_zero(
    tiny_config: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    extra = tmp_path / "long.yml"
    extra.write_text('{"train-iters": 100000, "checkpoint-factor": 100000}')
    cmd = [sys.executable, "-m", "neox_core.cli", str(tiny_config), str(extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "iteration        3/" in line:
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=120)
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert f"received {sig.name}" in out
    ckpt = tmp_path / "ckpt"
    step = (ckpt / "latest").read_text().strip()
    n = int(step.removeprefix("global_step"))
    assert n >= 3
    state = json.loads((ckpt / step / "trainer_state.json").read_text())
    assert state["iteration"] == n


def test_launch_env_from_torchrun_and_srun() -> None:
    torchrun = read_launch_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "n1",
            "MASTER_PORT": "29501",
        }
    )
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank) == (3, 8, 1)
    assert (torchrun.master_addr, torchrun.master_port, torchrun.distributed) == ("n1", 29501, True)
    srun = read_launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"})
    assert (srun.rank, srun.world_size, srun.local_rank) == (5, 16, 1)
    alone = read_launch_env({})
    assert (alone.rank, alone.world_size, alone.distributed) == (0, 1, False)
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        read_launch_env({"WORLD_SIZE": "two"})
