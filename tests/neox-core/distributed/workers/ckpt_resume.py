"""Train a tiny model at a TP x DP layout, saving/loading with `Checkpointer` (torchrun, gloo).

Writes `{"losses": {step: loss}, "save_seconds": [...], "load_seconds": ...}` as JSON on rank 0.
The batch of step i is drawn from a generator seeded with i, so every layout sees the same
global batch; each DP rank takes its contiguous rows. `--kill-rank R --kill-at-save K` SIGKILLs
rank R in the middle of its K-th save (after its first file is written).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from _common import VARIANTS, init_gloo

GLOBAL_BATCH = 4
SEQ = 16


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-gqa")
    p.add_argument("--layouts", default="2x3,1x0", help="TPxZERO,... of the resume scenario")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--zero", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--save", default=None)
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--load", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-at-save", type=int, default=0)
    p.add_argument("--scenario", choices=("run", "resume"), default="run")
    return p.parse_args()


def batch(step: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, vocab, (GLOBAL_BATCH, SEQ + 1), generator=g)


def build(model_name: str, tp: int, zero: int, world: int):
    """Model (TP, then FSDP2 over dp when zero is 3 or dp > 1), AdamW, mesh."""
    from torch.distributed.device_mesh import init_device_mesh

    from neox_core.distributed.tensor_parallel import apply_tensor_parallel
    from neox_core.models import build_model
    from neox_core.training.optimizer import build_optimizer

    cfg = VARIANTS[model_name]
    dp = world // tp
    mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=("dp", "tp"))
    model = build_model(cfg, seed=1234)
    if tp > 1:
        apply_tensor_parallel(model, mesh["tp"], sequence_parallel=False)
    if dp > 1 or zero == 3:
        from torch.distributed.fsdp import fully_shard

        for layer in model.layers:
            fully_shard(layer, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
    optimizer = build_optimizer(
        model, type="adamw", lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
    )
    return cfg, mesh, model, optimizer


def train(
    model_name: str,
    tp: int,
    zero: int,
    steps: int,
    *,
    save: str | None = None,
    save_every: int = 0,
    load: str | None = None,
    iteration: int | None = None,
    out: str | None = None,
) -> dict:
    """Train to `steps`; the losses (mean over ranks) by step, save and load seconds."""
    from neox_core.checkpoint import Checkpointer
    from neox_core.distributed.loss import lm_loss

    world = dist.get_world_size()
    cfg, mesh, model, optimizer = build(model_name, tp, zero, world)
    ckpt = Checkpointer(model, optimizer, mesh=mesh, model_cfg=cfg)
    dp_rank, dp = mesh["dp"].get_local_rank(), mesh["dp"].size()
    start, result = 0, {"losses": {}, "save_seconds": []}
    from neox_core.checkpoint.local_layout import local_tensor

    result["local_param_elements"] = sum(local_tensor(p).numel() for p in model.parameters())
    if load:
        start = ckpt.load(load, iteration).iteration
        result["load_seconds"] = ckpt.last_load_seconds
    rows = GLOBAL_BATCH // dp
    for step in range(start, steps):
        text = batch(step, cfg.vocab_size)[dp_rank * rows : (dp_rank + 1) * rows]
        tokens, labels = text[:, :-1], text[:, 1:]
        loss = lm_loss(model(tokens), labels, torch.ones_like(labels, dtype=torch.float32))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.detach().clone()
        dist.all_reduce(value)
        result["losses"][step + 1] = value.item() / world
        if out and dist.get_rank() == 0:  # as we go: a killed run still leaves its losses
            Path(out).write_text(json.dumps(result))
        if save and save_every and (step + 1) % save_every == 0:
            ckpt.save(save, step + 1, {"iteration": step + 1})
            result["save_seconds"].append(ckpt.last_save_seconds)
    return result


def resume_scenario(args: argparse.Namespace) -> dict:
    """For each layout: an uninterrupted run that also saves half-way, then resumes from that
    checkpoint at the first layout and at every other layout."""
    layouts = [tuple(int(v) for v in s.split("x")) for s in args.layouts.split(",")]
    half = args.steps // 2
    out: dict = {}
    root = Path(args.save)
    for i, (tp, zero) in enumerate(layouts):
        name = f"tp{tp}z{zero}"
        out[f"full_{name}"] = train(
            args.model, tp, zero, args.steps, save=str(root / name), save_every=half
        )
        for j, (tp2, zero2) in enumerate(layouts):
            if i == j and i > 0:
                continue  # exactness at the same layout is shown by the first layout
            out[f"resume_{name}_at_tp{tp2}z{zero2}"] = train(
                args.model, tp2, zero2, args.steps, load=str(root / name), iteration=half
            )
    return out


def install_kill(rank: int, args: argparse.Namespace) -> None:
    """Make rank `--kill-rank` die by SIGKILL half-way through its `--kill-at-save`-th save."""
    if rank != args.kill_rank:
        return
    import neox_core.checkpoint.checkpointer as ck

    original = ck._save_tensors
    calls = {"saves": 0}
    original_write = ck.Checkpointer._write_rank_files

    def counting_write(self, out, iteration):
        calls["saves"] += 1
        return original_write(self, out, iteration)

    def killing_save(path, tensors, meta):
        record = original(path, tensors, meta)  # the file's manifest record (size, hash)
        if calls["saves"] == args.kill_at_save:
            os.kill(os.getpid(), signal.SIGKILL)
        return record

    ck.Checkpointer._write_rank_files = counting_write
    ck._save_tensors = killing_save


def main() -> None:
    args = parse()
    rank, _ = init_gloo()
    install_kill(rank, args)
    if args.scenario == "resume":
        result = resume_scenario(args)
    else:
        result = train(
            args.model,
            args.tp,
            args.zero,
            args.steps,
            save=args.save,
            save_every=args.save_every,
            load=args.load,
            out=args.out,
        )
    if rank == 0:
        Path(args.out).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
