"""Run the real `neox-train` (`main_train`) several times in one torchrun launch.

    torchrun ... pp_train.py NAME=cfg.yml,layout.yml [NAME=...]

Each run prints `=== RUN NAME rc=<code>` after its log (rank 0), and, where the model has a
tied embedding split over pipeline stages, `TIED NAME <max |first - last|>` (every step
compared, the largest difference over the run). One launch pays torch's import and the
process start once for several layouts (the CI budget).
"""

from __future__ import annotations

import gc
import os
import sys
import time

import torch
import torch.distributed as dist

import neox_core.training.loop as loop_module
import neox_core.training.run as run_module
from neox_core.config import load_config
from neox_core.training.run import main_train

# one process group for all runs (a second init on torchrun's store fails to connect)
run_module.init_process_group = lambda launch, device: None
run_module._shutdown = lambda launch: (gc.collect(), dist.barrier())

_train_step = loop_module.train_step
_tied_diff = [0.0]


def _checked_train_step(*args, **kwargs):
    result = _train_step(*args, **kwargs)
    pipe = args[5].pipeline
    if pipe is not None and pipe.tied_group is not None:
        w = pipe.module.embed.weight.detach()
        w = w.to_local() if hasattr(w, "to_local") else w
        both = [torch.empty_like(w) for _ in range(2)]
        dist.all_gather(both, w.contiguous(), group=pipe.tied_group)
        _tied_diff[0] = max(_tied_diff[0], (both[0] - both[1]).abs().max().item())
    return result


loop_module.train_step = _checked_train_step


def main() -> int:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    worst = 0
    for spec in sys.argv[1:]:
        name, files = spec.split("=", 1)
        _tied_diff[0] = -1.0
        start = time.perf_counter()
        rc = main_train(load_config(files.split(",")))
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"=== RUN {name} rc={rc} ({time.perf_counter() - start:.1f} s)", flush=True)
        if _tied_diff[0] >= 0:
            print(f"TIED {name} {_tied_diff[0]:.3e}", flush=True)
        worst = max(worst, rc)
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
