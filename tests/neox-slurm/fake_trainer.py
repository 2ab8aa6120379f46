#!/usr/bin/env python3
"""A stand-in for neox-train in the `slurm` tests: GPT-NeoX log lines, no torch.

Reads the YAML configs it is given (later ones override earlier ones) for `train_iters`,
`seconds_per_iter`, `mode` (ok | fail | exception_then_hang | hang | nan), `save` (a folder) and
`checkpoint_signals` (default USR1; e.g. "USR1,TERM"). Like neox-train it saves a checkpoint and
exits on those signals, and resumes from `save` when restarted, so the checkpoint-and-requeue
path of the sbatch script runs for real.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import yaml


def main(paths: list[str]) -> int:
    config: dict = {}
    for path in paths:
        config.update(yaml.safe_load(Path(path).read_text()) or {})
    total = int(config.get("train_iters", 5))
    pause = float(config.get("seconds_per_iter", 0.1))
    mode = config.get("mode", "ok")
    save = Path(config["save"]) if config.get("save") else None
    start = (
        int(save.joinpath("latest").read_text()) if save and save.joinpath("latest").exists() else 0
    )
    state = {"iteration": start}

    def checkpoint_and_exit(signum: int, frame: object) -> None:
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            save.joinpath("latest").write_text(str(state["iteration"]))
        print(
            f"saving checkpoint at iteration {state['iteration']:8d} (signal {signum})", flush=True
        )
        sys.exit(0)

    for name in str(config.get("checkpoint_signals", "USR1")).split(","):
        signal.signal(getattr(signal, f"SIG{name.strip()}"), checkpoint_and_exit)
    rank = os.environ.get("RANK", "?")
    world = os.environ.get("WORLD_SIZE", "?")
    master = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    print(f"fake trainer: rank {rank}/{world} master {master} resuming at {start}", flush=True)
    for iteration in range(start + 1, total + 1):
        time.sleep(pause)
        state["iteration"] = iteration
        loss = float("nan") if mode == "nan" and iteration > 2 else 10.0 / iteration
        print(
            f" samples/sec: {8 / pause:.3f} | iteration {iteration:8d}/{total:8d} |"
            f" elapsed time per iteration (ms): {pause * 1000:.1f} | learning rate: 6.000E-04 |"
            f" approx flops per GPU: 1.0GFLOPS | lm_loss: {loss:.6E} | number of skipped"
            f" iterations:   0 | number of nan iterations:   0 | tokens/s: {8192 / pause:.1f} |",
            flush=True,
        )
        if mode == "exception_then_hang" and iteration == 3:
            try:
                raise RuntimeError("fake trainer: shapes do not match (3 vs 4)")
            except RuntimeError:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
            time.sleep(600)  # the process hangs after the error, as NCCL teardown often does
        if mode == "hang" and iteration == 2:
            time.sleep(600)
    if mode == "fail":
        print("fake trainer: giving up with exit status 3", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
