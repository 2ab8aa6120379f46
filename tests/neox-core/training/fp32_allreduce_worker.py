"""Worker of test_fp32_allreduce.py, one per rank under torchrun (gloo, CPU).

argv: CONFIG OUT_DIR. Writes OUT_DIR/rank<R>.json with the dtype of the reduced gradients and
their largest error against the fp32 and bf16 means of the ranks' own gradients.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from neox_core.config import load_config
from neox_core.models import build_model
from neox_core.training.precision import autocast


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def main(cfg_path: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    cfg = load_config([cfg_path])
    assert cfg.precision.dtype == "bf16" and cfg.precision.fp32_allreduce
    ids = torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(rank))

    def backward(model: torch.nn.Module) -> None:
        with autocast(cfg.precision.dtype, torch.device("cpu")):
            logits = model(ids)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()

    own = build_model(cfg.model, seed=1)  # fp32 master weights, as neox-train builds them
    backward(own)
    local = _grads(own)
    gathered = [torch.empty_like(local) for _ in range(2)]
    dist.all_gather(gathered, local)
    fp32_mean = (gathered[0] + gathered[1]) / 2
    bf16_mean = ((gathered[0].bfloat16() + gathered[1].bfloat16()) / 2).float()

    ddp = torch.nn.parallel.DistributedDataParallel(build_model(cfg.model, seed=1))
    backward(ddp)
    reduced = _grads(ddp.module)
    scale = fp32_mean.abs().max().item()
    Path(out, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "dtype": str(reduced.dtype),
                "err_vs_fp32": (reduced - fp32_mean).abs().max().item() / scale,
                "bf16_vs_fp32": (bf16_mean - fp32_mean).abs().max().item() / scale,
            }
        )
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
