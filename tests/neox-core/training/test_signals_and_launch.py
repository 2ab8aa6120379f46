"""SIGTERM/SIGUSR1 finish the step, save and exit 0 (SLURM requeue); launch variables."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
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


def test_a_duplicate_signal_is_ignored_and_a_later_one_terminates() -> None:
    script = textwrap.dedent(
        """
        import os, signal, time
        from neox_core.training.signals import StopRequest
        StopRequest.duplicate_window_s = 0.5
        stop = StopRequest().install()
        os.kill(os.getpid(), signal.SIGTERM)
        print("first:", stop.requested, stop.signal_name, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. torchrun forwarding SLURM's SIGTERM
        print("duplicate ignored", flush=True)
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGTERM)
        print("still alive", flush=True)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.stdout == "first: True SIGTERM\nduplicate ignored\n", run.stdout + run.stderr
    assert run.returncode == -signal.SIGTERM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes importing torch and joining gloo: ~25 s on a shared CPU
def test_a_signal_to_one_rank_stops_every_rank(tiny_config: Path, tmp_path: Path) -> None:
    """SIGTERM reaching rank 1 only: both ranks stop after the same step, save once, exit 0."""
    extra = tmp_path / "long.yml"
    extra.write_text(
        '{"train-iters": 100000, "checkpoint-factor": 100000, "eval-interval": 100000}'
    )
    cmd = [sys.executable, "-m", "neox_core.cli", str(tiny_config), str(extra)]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on the CPU, also on a one-GPU machine
    procs = [
        subprocess.Popen(
            cmd,
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        assert procs[0].stdout is not None
        seen = []
        for line in procs[0].stdout:  # only rank 0 prints the log
            seen.append(line)
            if "iteration        3/" in line:
                procs[1].send_signal(signal.SIGTERM)
                break
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    out0 = "".join(seen) + outs[0]
    assert [p.returncode for p in procs] == [0, 0], out0 + outs[1]
    assert "received a stop signal on another rank" in out0
    step = (tmp_path / "ckpt" / "latest").read_text().strip()
    assert int(step.removeprefix("global_step")) >= 3


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
