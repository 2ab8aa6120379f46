"""`zero_gather_dtype: bf16` against fp32 gathers, ZeRO 1 at DP 2, bf16 autocast (gloo, CPU).

Both runs start from the same weights and train on the same batches through the trainer's own
`train_step`. Reported: the dtype of a layer's weights as its forward sees them (bf16 gathers:
bf16), the dtypes of the sharded parameters and optimizer state after training (fp32 in both), and
each step's loss (mean over ranks).
"""

from __future__ import annotations

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
from neox_core.training.optimizer import build_optimizer
from neox_core.training.schedules import build_schedule
from neox_core.training.step import StepSettings, train_step

SEQ, MICRO, STEPS = 16, 2, 5


def batches(step: int, rank: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 * step + rank)
    text = torch.randint(0, vocab, (MICRO, SEQ + 1), generator=g)
    return [{"text": text, "label": text.clone()}]


def run(gather: str, start: dict, world: int) -> dict:
    mcfg = VARIANTS["neox-parallel-untied"]
    mesh = build_mesh(ParallelDims(dp=world, tp=1), "cpu")
    dp_rank, _ = dp_rank_and_size(mesh)
    cfg = NeoxConfig(model=mcfg)
    cfg.parallel.zero_stage, cfg.parallel.zero_gather_dtype = 1, gather
    model = build_model(mcfg, seed=7, dtype="fp32")
    model.load_state_dict(start)
    trained = parallelize(model, mesh, cfg, torch.device("cpu"))
    seen: dict[str, str] = {}

    def record(module, args) -> None:
        seen.setdefault("weight", str(module.weight.dtype))
        seen.setdefault("norm_weight", str(norm.weight.dtype))

    layer = model.layers[0]
    norm = layer.input_norm
    layer.attention.qkv.register_forward_pre_hook(record)
    opt = build_optimizer(model, type="adamw", lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.1)  # fmt: skip
    sched = build_schedule(lr=3e-3, min_lr=3e-4, warmup=0.1, lr_decay_iters=STEPS,
                           train_iters=STEPS, decay_style="cosine")  # fmt: skip
    sched.apply(opt)
    settings = StepSettings(precision="bf16", gradient_accumulation_steps=1, clip_grad=1.0,
                            on_nan="stop", device=torch.device("cpu"))  # fmt: skip
    losses = []
    for step in range(STEPS):
        data = iter(batches(step, dp_rank, mcfg.vocab_size))
        result = train_step(trained, opt, sched, None, data, settings, step + 1)
        loss = torch.tensor([result.loss], dtype=torch.float64)
        dist.all_reduce(loss)
        losses.append(loss.item() / world)
    params = [p for p in model.parameters()]
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim]
    return {
        "seen": seen,
        "sharded_param_dtypes": sorted({str(p.dtype) for p in params}),
        "all_dtensor": all(isinstance(p, DTensor) for p in params),
        "state_dtypes": sorted({str(t.dtype) for t in state}),
        "losses": losses,
    }


def main() -> None:
    rank, world = init_gloo()
    torch.manual_seed(0)
    start = build_model(VARIANTS["neox-parallel-untied"], seed=7, dtype="fp32").state_dict()
    report = {gather: run(gather, start, world) for gather in ("fp32", "bf16")}
    report_and_finish(rank, report)


if __name__ == "__main__":
    main()
