"""torchrun worker of test_vocab_parallel.py: one vocabulary shard per rank, results saved."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from neox_kernels import ops

TOKENS, HIDDEN, VOCAB, Z = 12, 8, 30, 1e-3
BOUNDS = [0, 13, VOCAB]  # uneven shards


def inputs():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(TOKENS, HIDDEN, generator=gen, dtype=torch.float64)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    labels[::4] = -100
    return hidden, weight, labels


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        hidden, weight, labels = inputs()
        shard = weight[BOUNDS[rank] : BOUNDS[rank + 1]].clone().requires_grad_()
        h = hidden.clone().requires_grad_()
        loss = ops.vocab_parallel_linear_cross_entropy(h, shard, labels, BOUNDS[rank], z_loss=Z)
        loss.backward()
        torch.save((loss.detach(), h.grad, shard.grad), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
