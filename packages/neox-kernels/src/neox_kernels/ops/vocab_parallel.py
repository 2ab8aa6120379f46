"""Cross-entropy over a vocabulary split across a process group (tensor parallelism).

Each rank holds the LM-head rows of its vocabulary shard and the same hidden states and
labels. The shards' statistics from `linear_cross_entropy_shard` are combined with one
all-gather (logsumexp) and one all-reduce (label logit); the [tokens, vocab] logits exist on
no rank, not even as a shard. Every rank gets the same loss. Backward gives each rank the
exact gradient of its weight shard and its shard's part of the hidden-state gradient: the
caller sums the hidden-state gradient over the group, as for any column-parallel layer.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from neox_kernels.ops.cross_entropy import IGNORE_INDEX, linear_cross_entropy_shard


def vocab_parallel_linear_cross_entropy(
    hidden: Tensor,
    weight_shard: Tensor,
    labels: Tensor,
    vocab_start: int,
    group: dist.ProcessGroup | None = None,
    z_loss: float = 0.0,
    chunk_rows: int | None = None,
) -> Tensor:
    """Mean cross-entropy (+ z_loss * mean lse^2) over tokens whose label is not -100."""
    lse_local, target_local = linear_cross_entropy_shard(
        hidden, weight_shard, labels, vocab_start, chunk_rows
    )
    world = dist.get_world_size(group)
    gathered = [torch.empty_like(lse_local) for _ in range(world)]
    dist.all_gather(gathered, lse_local.detach().contiguous(), group=group)
    lse_all = torch.logsumexp(torch.stack(gathered), 0)
    target_all = target_local.detach().clone()
    dist.all_reduce(target_all, group=group)
    # Values of the global statistics; gradients of this rank's shard only:
    # d lse / d lse_local = exp(lse_local - lse), d target / d target_local = 1.
    share = torch.exp(lse_local - lse_all)
    lse = lse_all + (share - share.detach())
    target = target_all + (target_local - target_local.detach())
    valid = labels != IGNORE_INDEX
    per_token = (lse - target + z_loss * lse * lse) * valid
    return per_token.sum() / valid.sum().clamp(min=1)
