"""The training loop at DP 2 (gloo, CPU) with synced and with deferred steps.

Each run trains the tiny GPT-NeoX model (DDP, fused AdamW) through `training.loop.train` for
six iterations; rank 1's batch of iteration 4 gives a NaN loss there only. `--stop-at N`
makes rank 1 alone receive SIGUSR1 while it takes iteration N's batch; `--device cuda` runs
it on one GPU per rank under NCCL (the vote's device all-reduce and pinned copy). Rank 0 prints
`RESULT {json}` with, per mode, its log lines and, from every rank, the iteration it stopped
at, whether it stopped on the signal, its skipped count and a checksum of its weights.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from _common import VARIANTS, init_gloo, report_and_finish

from neox_core.config.schema import NeoxConfig
from neox_core.distributed.mesh import build_mesh
from neox_core.distributed.parallel_dims import ParallelDims
from neox_core.distributed.parallelize import parallelize
from neox_core.models import build_model
from neox_core.training.launch import init_process_group, nccl_transport_line, read_launch_env
from neox_core.training.loop import Loop, train
from neox_core.training.optimizer import param_groups
from neox_core.training.run import _reduce_mean, _reduce_step
from neox_core.training.schedules import build_schedule
from neox_core.training.signals import StopRequest
from neox_core.training.state import Progress
from neox_core.training.step import StepSettings
from neox_core.training.stop_vote import StopVote
from neox_core.training.trackers import Trackers

SEQ, MICRO, ITERS = 16, 2, 6


class Poison(torch.nn.Module):
    """The model, whose logits turn NaN while `on` is set."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.on = model, False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(tokens)
        return out * float("nan") if self.on else out


def run(defer: bool, stop_at: int, rank: int, world: int, device: torch.device) -> dict:
    mcfg = VARIANTS["neox-parallel-untied"]
    model = Poison(build_model(mcfg, seed=7, dtype="fp32").to(device))
    cfg = NeoxConfig(model=mcfg)
    cfg.training.compile = "false"  # the loop is under test; "auto" compiles on CUDA
    trained = parallelize(model, build_mesh(ParallelDims(dp=world, tp=1), device.type), cfg,
                          device)  # fmt: skip
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3, betas=(0.9, 0.95), fused=True)
    sched = build_schedule(lr=3e-3, min_lr=3e-4, warmup=0.1, lr_decay_iters=ITERS,
                           train_iters=ITERS, decay_style="cosine")  # fmt: skip
    sched.apply(opt)
    stop = StopRequest().install()

    def data():
        for i in range(1, 100):
            model.on = rank == 1 and i == 4
            if rank == 1 and i == stop_at:
                signal.raise_signal(signal.SIGUSR1)
            g = torch.Generator().manual_seed(100 * i + rank)
            yield {"text": torch.randint(0, mcfg.vocab_size, (MICRO, SEQ + 1), generator=g)}

    launch = read_launch_env()
    lines: list[str] = []
    settings = StepSettings("fp32", 1, 1.0, "skip", device, defer_sync=defer)
    loop = Loop(
        model=trained, optimizer=opt, schedule=sched, scaler=None, settings=settings,
        train_data=data(), valid_data=None, progress=Progress(), train_iters=ITERS,
        train_batch_size=MICRO * world, seq_length=SEQ, log_interval=3, eval_interval=0,
        eval_iters=0, checkpoint_factor=None, extra_save_iters=None, flops_per_iteration=1.0,
        peak_flops=1.0, world_size=world,
        trackers=Trackers(tensorboard_dir=None, use_wandb=False, wandb_project="x",
                          wandb_group=None, wandb_team=None),
        stop=stop, save=None, reduce_mean=_reduce_mean(launch), reduce_step=_reduce_step(launch),
        log=lines.append, stop_vote=StopVote(device),
    )  # fmt: skip
    try:
        train(loop)
    finally:
        stop.uninstall()
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    mine = [loop.progress.iteration, loop.stopped, loop.progress.skipped_iterations, checksum]
    ranks: list = [None] * world
    dist.all_gather_object(ranks, mine)
    return {"lines": lines, "ranks": ranks}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stop-at", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    nccl = None
    if args.device == "cuda":  # neox-train's own launch: NCCL, and its transport line
        launch = read_launch_env()
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        init_process_group(launch, device)
        nccl = nccl_transport_line(device)
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = init_gloo()
        device = torch.device("cpu")
    report = {mode: run(mode == "deferred", args.stop_at, rank, world, device)
              for mode in ("synced", "deferred")}  # fmt: skip
    report["nccl"] = nccl
    report_and_finish(rank, report)


if __name__ == "__main__":
    main()
