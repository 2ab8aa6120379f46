"""The training loss, for plain logits and for logits sharded on the vocabulary (TP).

Under tensor parallelism `CausalLM` returns logits as a DTensor Shard(-1): each TP rank holds a
contiguous slice of the vocabulary. The cross entropy is computed from those slices with three
all-reduces of one number per token (max, target logit, sum of exponentials), as Megatron's
`vocab_parallel_cross_entropy`; the full-vocabulary logits are never gathered. It is written
with explicit collectives rather than DTensor's `loss_parallel` so that it returns per-token
losses of any leading shape (for loss masks) and keeps the softmax in fp32 for the backward.
(fp64 logits stay fp64: the parity tests run the whole model in fp64 to tell sharding errors
from round-off.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Shard


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        logits: torch.Tensor,  # [N, V_local] fp32 (or fp64), this rank's vocabulary slice
        labels: torch.Tensor,  # [N]
        vocab_start: int,
        ignore_index: int,
        group: dist.ProcessGroup,
    ) -> torch.Tensor:
        n, v_local = logits.shape
        logits_max = logits.max(dim=-1).values
        dist.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - logits_max.unsqueeze(-1)

        valid = labels != ignore_index
        local_label = labels - vocab_start
        here = valid & (local_label >= 0) & (local_label < v_local)
        index = torch.where(here, local_label, torch.zeros_like(local_label))
        rows = torch.arange(n, device=logits.device)
        target = torch.where(here, shifted[rows, index], torch.zeros((), device=logits.device))
        dist.all_reduce(target, group=group)

        exp = shifted.exp()
        sum_exp = exp.sum(dim=-1)
        dist.all_reduce(sum_exp, group=group)
        loss = torch.where(valid, sum_exp.log() - target, torch.zeros((), device=logits.device))

        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, index, here, valid)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):  # type: ignore[override]
        softmax, index, here, valid = ctx.saved_tensors
        grad = softmax.clone()
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad[rows, index] -= here.to(grad.dtype)
        grad.mul_((grad_loss * valid.to(grad_loss.dtype)).unsqueeze(-1))
        return grad, None, None, None, None


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 up to fp32; fp32 and fp64 unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def vocab_parallel_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Per-token cross entropy in fp32 (fp64 for fp64 logits), shape of `labels`; 0 where the
    label is `ignore_index`.

    `logits` [..., V] is a plain tensor or a DTensor sharded on its last dim over a 1-D mesh
    (then the result is the same on every rank of that mesh, a plain tensor).
    """
    if not isinstance(logits, DTensor):
        vocab = logits.shape[-1]
        losses = F.cross_entropy(
            _at_least_fp32(logits).reshape(-1, vocab),
            labels.reshape(-1),
            ignore_index=ignore_index,
            reduction="none",
        )
        return losses.view(labels.shape)
    mesh = logits.device_mesh
    if mesh.ndim != 1 or logits.placements != (Shard(logits.ndim - 1),):
        raise ValueError(
            "vocab_parallel_cross_entropy: expected logits sharded on the last dim over a 1-D "
            f"mesh, got placements {logits.placements} on a {mesh.ndim}-D mesh"
        )
    local = logits.to_local()
    v_local = local.shape[-1]
    if v_local * mesh.size() != logits.shape[-1]:
        raise ValueError(
            f"vocab_parallel_cross_entropy: vocabulary {logits.shape[-1]} is not split evenly "
            f"over {mesh.size()} ranks"
        )
    losses = _VocabParallelCrossEntropy.apply(
        _at_least_fp32(local).reshape(-1, v_local),
        labels.reshape(-1),
        mesh.get_local_rank() * v_local,
        ignore_index,
        mesh.get_group(),
    )
    return losses.view(labels.shape)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over positions where `loss_mask` is 1 (training/batch.py's
    `masked_lm_loss`), for plain or vocabulary-sharded logits; 0 when nothing is trained on."""
    losses = vocab_parallel_cross_entropy(logits, labels)
    mask = loss_mask.reshape(losses.shape).to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)
