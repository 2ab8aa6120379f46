"""ZeRO stages (and TP x ZeRO) against one process, through the trainer's own step function.

Every rank first trains an unparallelised copy of the model on the whole global batch (the
reference one process would compute), then, for each requested layout, a fresh copy built from
the same seed, parallelised by `neox_core.distributed.parallelize`, on its data-parallel slice.
Losses (mean over ranks, as the trainer logs them) and gradient norms must agree within
--rtol every step. With --memory, per-rank bytes of parameters, gradients and optimizer state
are also printed against the one-process totals.

Usage: zero_parity.py --layouts 1:0,1:3,2:3 [--steps 10] [--model llama-gqa] [--fused]
(each layout is TP:ZeRO-stage; the data-parallel size is the world size / TP). --fused runs
every model with the fused ops' PyTorch references (as CUDA runs the kernels) and reports per
layout how many fused linear + cross-entropy calls (whole vocabulary or a vocabulary shard)
its first step made.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).parent))
from _common import VARIANTS, init_gloo, report_and_finish

from neox_core.config.schema import NeoxConfig
from neox_core.distributed.mesh import build_mesh, dp_rank_and_size
from neox_core.distributed.parallel_dims import ParallelDims
from neox_core.distributed.parallelize import parallelize
from neox_core.models import build_model
from neox_core.models.fused_ops import force_fusion_on_cpu
from neox_core.training.optimizer import build_optimizer
from neox_core.training.schedules import build_schedule
from neox_core.training.step import StepSettings, train_step

SEQ, MICRO, GAS = 16, 2, 2
# the fused loss's ops: the whole vocabulary, or a vocabulary shard (tensor parallel)
FUSED_LOSS_OPS = ("neox::linear_cross_entropy", "neox::linear_cross_entropy_stats")


def batches(step: int, n_micro: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    """The global batch of `step` as n_micro micro-batches; some targets masked (-100)."""
    g = torch.Generator().manual_seed(1000 + step)
    out = []
    for _ in range(n_micro):
        text = torch.randint(0, vocab, (MICRO, SEQ + 1), generator=g)
        label = text.clone()
        label[:, :3] = -100
        out.append({"text": text, "label": label})
    return out


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t is None or t.ndim == 0:
            continue
        local = t.to_local() if isinstance(t, DTensor) else t
        total += local.numel() * local.element_size()
    return total


def train(model, trained, steps: int, micro_of_step, gas: int, world: int):
    opt = build_optimizer(model, type="adamw", lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.1)  # fmt: skip
    sched = build_schedule(lr=3e-3, min_lr=3e-4, warmup=0.1, lr_decay_iters=steps,
                           train_iters=steps, decay_style="cosine")  # fmt: skip
    sched.apply(opt)
    settings = StepSettings(precision="fp32", gradient_accumulation_steps=gas, clip_grad=1.0,
                            on_nan="stop", device=torch.device("cpu"))  # fmt: skip
    losses, norms, memory = [], [], {}
    for step in range(steps):
        watch = torch.profiler.profile() if step == 0 else contextlib.nullcontext()
        with watch:
            result = train_step(
                trained, opt, sched, None, iter(micro_of_step(step)), settings, step + 1
            )
        if step == 0:
            events = [e.name for e in watch.events()]
            memory["fused_loss_calls"] = sum(name in FUSED_LOSS_OPS for name in events)
            # FSDP2's collectives in one step (gloo's op names): one per FSDP unit and micro
            # batch, or per unit and step where ZeRO 1 reduces at the accumulation boundary
            memory["reduce_scatters"] = events.count("c10d::_reduce_scatter_base_")
            memory["all_gathers"] = events.count("c10d::_allgather_base_")
        loss = torch.tensor([result.loss], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(loss)
        losses.append(loss.item() / world)
        norms.append(result.grad_norm)
        if step == 0:
            # gradients are freed by the step: measure them with a fresh backward below
            memory["params"] = local_bytes(model.parameters())
            memory["optimizer"] = local_bytes(
                t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
            )
    return losses, norms, memory, opt


def grad_bytes(model, trained, micro) -> int:
    from neox_core.distributed.loss import lm_loss
    from neox_core.training.batch import make_batch

    b = make_batch(micro)
    lm_loss(trained(b.tokens), b.labels, b.loss_mask).backward()
    n = local_bytes(p.grad for p in model.parameters())
    for p in model.parameters():
        p.grad = None
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", default="1:0,1:1,1:2,1:3")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model", default="neox-parallel-untied")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--fused", action="store_true")
    args = ap.parse_args()
    rank, world = init_gloo()
    with force_fusion_on_cpu(args.fused):
        run(args, rank, world)


def run(args: argparse.Namespace, rank: int, world: int) -> None:
    mcfg = VARIANTS[args.model]
    vocab = mcfg.vocab_size
    torch.manual_seed(0)
    start = build_model(mcfg, seed=7, dtype="fp32").state_dict()
    references: dict[int, tuple] = {}
    failures, report = [], {}
    for layout in args.layouts.split(","):
        tp, stage = (int(x) for x in layout.split(":"))
        dims = ParallelDims(dp=world // tp, tp=tp)
        n_micro = dims.dp * GAS
        if dims.dp not in references:  # one process, the whole global batch
            ref_model = build_model(mcfg, seed=7, dtype="fp32")
            ref_model.load_state_dict(start)
            ref_losses, ref_norms, ref_mem, _ = train(
                ref_model,
                ref_model,
                args.steps,
                lambda s, n=n_micro: batches(s, n, vocab),
                n_micro,
                1,
            )
            ref_mem["grads"] = grad_bytes(ref_model, ref_model, batches(0, 1, vocab)[0])
            references[dims.dp] = (ref_losses, ref_norms, ref_mem)
        ref_losses, ref_norms, ref_mem = references[dims.dp]

        mesh = build_mesh(dims, "cpu")
        dp_rank, dp_size = dp_rank_and_size(mesh)
        cfg = NeoxConfig(model=mcfg)
        cfg.parallel.tensor_parallel_size, cfg.parallel.zero_stage = tp, stage
        model = build_model(mcfg, seed=7, dtype="fp32")
        model.load_state_dict(start)
        trained = parallelize(model, mesh, cfg, torch.device("cpu"))

        def mine(step: int, n=n_micro, r=dp_rank):  # this dp rank's micro-batches, global order
            return batches(step, n, vocab)[r * GAS : (r + 1) * GAS]

        losses, norms, mem, _ = train(model, trained, args.steps, mine, GAS, world)
        mem["grads"] = grad_bytes(model, trained, batches(0, 1, vocab)[0])
        worst = 0.0
        for i, (a, b, c, d) in enumerate(zip(losses, ref_losses, norms, ref_norms, strict=True)):
            rel = max(abs(a - b) / abs(b), abs(c - d) / abs(d))
            worst = max(worst, rel)
            if rel > args.rtol:
                failures.append(f"{layout} step {i + 1}: loss {a} vs {b}, norm {c} vs {d}")
        report[f"tp{tp}_dp{dp_size}_zero{stage}"] = {
            "max_rel_diff": worst,
            "fused_loss_calls": mem.pop("fused_loss_calls"),
            "reduce_scatters": mem.pop("reduce_scatters"),
            "all_gathers": mem.pop("all_gathers"),
            "one_process_fused_loss_calls": ref_mem.get("fused_loss_calls"),
            "bytes": mem,
            "one_process_bytes": {
                k: v for k, v in ref_mem.items() if k in ("params", "optimizer", "grads")
            },
        }
    report_and_finish(rank, report)
    if failures:
        print(f"rank {rank}: " + "; ".join(failures), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
