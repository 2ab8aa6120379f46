"""The global gradient norm and clipping for plain and DTensor gradients (TP, FSDP2, both).

`torch.nn.utils.clip_grad_norm_` cannot stack norms of DTensors that live on different meshes
(TP-only, FSDP-only and 2-D parameters can mix). Here each gradient contributes the sum of
squares of its local piece; pieces sharded over a mesh dimension are summed over that
dimension's group, replicated ones are counted once. One all-reduce per distinct
(mesh, sharded dims) group, so a step costs a handful of collectives, not one per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate


def sum_of_squares(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """Σ x² over all elements of `tensors`, accumulated in fp32 (fp64 stays fp64).

    One multi-tensor norm kernel per (device, dtype) group reads each tensor once; a
    `.pow(2).sum()` per tensor also wrote a squared copy of every gradient and launched two
    kernels per parameter (at Pythia-1B about 3 ms of an optimizer step on an H200).
    """
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    total: torch.Tensor | None = None
    for (_, dtype), group in groups.items():
        acc = torch.promote_types(dtype, torch.float32)
        norms = torch._foreach_norm(group, 2, dtype=acc if acc != dtype else None)
        part = torch.stack(norms).pow(2).sum()
        total = part if total is None else total + part.to(total.device)
    return total


def _local_square_sums(grads: Iterable[torch.Tensor]) -> torch.Tensor | None:
    total: torch.Tensor | None = None
    plain: list[torch.Tensor] = []
    groups: dict[tuple, list] = {}
    for g in grads:
        if isinstance(g, DTensor):
            if any(pl.is_partial() for pl in g.placements):  # pending sums: finish them first
                g = g.redistribute(
                    g.device_mesh, [Replicate() if pl.is_partial() else pl for pl in g.placements]
                )
            # Shard and FSDP2's _StridedShard (TP and ZeRO on one dim) split the elements;
            # only Replicate repeats them
            shard_dims = tuple(i for i, pl in enumerate(g.placements) if not pl.is_replicate())
            key = (id(g.device_mesh), shard_dims)
            groups.setdefault(key, [g.device_mesh, shard_dims])
            groups[key].append(g.to_local().detach())
        else:
            plain.append(g.detach())
    if plain:
        total = sum_of_squares(plain)
    for mesh, shard_dims, *pieces in groups.values():
        part = sum_of_squares(pieces)
        if part is None:
            continue
        for dim in shard_dims:
            dist.all_reduce(part, group=mesh.get_group(dim))
        total = part if total is None else total + part.to(total.device)
    return total


@torch.no_grad()
def sum_partial_grads(params: Iterable[torch.Tensor]) -> None:
    """Finish the sums DTensor left pending in gradients (Partial placements), in place.

    Under sequence parallelism the norm weights act on sequence shards, so their gradients
    leave the backward as per-rank partial sums. Left so, every reader sums them again: the
    gradient norm, and each optimizer op that reads a gradient (one small all-reduce per norm
    weight per op, every step). Here they are summed once, one all-reduce per (mesh, partial
    dims, dtype) over the pieces packed into one buffer, as Megatron sums its
    sequence-parallel norm gradients; `p.grad` becomes the summed DTensor.
    """

    def summed(placements) -> list:
        return [Replicate() if pl.is_partial() else pl for pl in placements]

    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        g = p.grad
        if not isinstance(g, DTensor):
            continue
        dims = tuple(i for i, pl in enumerate(g.placements) if pl.is_partial())
        if not dims:
            continue
        if any(getattr(g.placements[i], "reduce_op", "sum") != "sum" for i in dims):
            p.grad = g.redistribute(g.device_mesh, summed(g.placements))  # DTensor's own way
            continue
        groups.setdefault((id(g.device_mesh), dims, g.dtype, g.device), []).append(p)
    for (_, dims, _, _), ps in groups.items():
        grads = [p.grad for p in ps]
        mesh = grads[0].device_mesh
        pieces = [g.to_local() for g in grads]
        flat = torch.cat([t.reshape(-1) for t in pieces])
        for dim in dims:
            dist.all_reduce(flat, group=mesh.get_group(dim))
        sums = flat.split([t.numel() for t in pieces])
        for p, g, piece, total in zip(ps, grads, pieces, sums, strict=True):
            p.grad = DTensor.from_local(
                total.view(piece.shape), mesh, summed(g.placements), run_check=False,
                shape=g.shape, stride=g.stride(),
            )  # fmt: skip


def total_grad_norm(
    params: Iterable[torch.Tensor],
    *,
    groups: Sequence[Any] = (),
    exclude: Collection[int] = (),
) -> torch.Tensor:
    """The 2-norm of all gradients together, as one process holding every gradient would see.

    Pipeline parallelism: `groups` (the "pp" group) sum the squares over ranks that hold
    different parameters; `exclude` holds the ids of parameters counted elsewhere (the last
    stage's copy of a tied embedding).
    """
    grads = [p.grad for p in params if p.grad is not None and id(p) not in exclude]
    squares = _local_square_sums(grads)
    if groups:
        if squares is None:
            squares = torch.zeros((), dtype=torch.float32)
        if dist.get_backend() == "nccl" and not squares.is_cuda:
            squares = squares.cuda()
        for group in groups:
            dist.all_reduce(squares, group=group)
    if squares is None:
        return torch.zeros(())
    return squares.sqrt()


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float, **norm_kw: Any) -> torch.Tensor:
    """Scale gradients so their global norm is at most `max_norm`; returns the norm before.

    As torch's clip_grad_norm_: coefficient max_norm / (norm + 1e-6), clamped to 1; a
    non-finite norm leaves the gradients as they are (the step is skipped by the caller).
    """
    params = list(params)
    norm = total_grad_norm(params, **norm_kw)
    value = float(norm)
    if max_norm > 0 and math.isfinite(value):
        coef = min(1.0, max_norm / (value + 1e-6))
        if coef < 1.0:
            for p in params:
                if p.grad is not None:
                    grad = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
                    grad.mul_(coef)
    return norm


def clip_divisor(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """What clipping divides the gradients by, as a device tensor: no host sync.

    The same rule as `clip_grad_norm` (the gradients are scaled by max_norm / (norm + 1e-6)
    when that is below 1; a non-finite norm leaves them as they are), as the divisor
    (norm + 1e-6) / max_norm, at least 1. A fused AdamW applies it as its `grad_scale` while
    it reads each gradient, so clipping costs no pass of its own over the gradients.
    """
    divisor = ((norm.float() + 1e-6) / max_norm).clamp(min=1.0)
    return torch.where(torch.isfinite(divisor), divisor, torch.ones_like(divisor))
