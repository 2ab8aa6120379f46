"""Cut a full tensor into tensor-parallel pieces and join them again, from shard metadata alone.

A tensor is cut along `tp_dim` into equal contiguous pieces, one per rank. Fused tensors
(`tp_blocks`, e.g. SwiGLU's [up; gate] or grouped-query [q; k; v]) are cut block by block, so
rank r holds [up_r; gate_r]: the layout a tensor-parallel layer computes with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neox_ckpt.errors import ConversionError


def piece_shape(
    full_shape: Sequence[int], tp_dim: int | None, world: int, where: str = ""
) -> tuple[int, ...]:
    shape = list(full_shape)
    if tp_dim is None:
        return tuple(shape)
    if shape[tp_dim] % world:
        raise ConversionError(
            f"{where}: size {shape[tp_dim]} along dim {tp_dim} is not divisible by "
            f"tensor-parallel size {world}"
        )
    shape[tp_dim] //= world
    return tuple(shape)


def _check_blocks(
    size: int, blocks: Sequence[int] | None, world: int, where: str
) -> tuple[int, ...] | None:
    if blocks is None:
        return None
    if sum(blocks) != size:
        raise ConversionError(f"{where}: fused blocks {list(blocks)} do not add up to {size}")
    for b in blocks:
        if b % world:
            raise ConversionError(
                f"{where}: fused block of {b} rows is not divisible by tensor-parallel size {world}"
            )
    return tuple(blocks)


def split(
    full: torch.Tensor,
    tp_dim: int | None,
    world: int,
    blocks: Sequence[int] | None = None,
    where: str = "",
) -> list[torch.Tensor]:
    """The `world` pieces of `full` (the same tensor `world` times when replicated)."""
    if tp_dim is None or world == 1:
        return [full] * world
    size = full.shape[tp_dim]
    piece_shape(full.shape, tp_dim, world, where)
    checked = _check_blocks(size, blocks, world, where)
    if checked is None:
        return [p.contiguous() for p in full.chunk(world, dim=tp_dim)]
    per_block = [b.chunk(world, dim=tp_dim) for b in full.split(list(checked), dim=tp_dim)]
    return [torch.cat([pb[r] for pb in per_block], dim=tp_dim) for r in range(world)]


def merge(
    pieces: Sequence[torch.Tensor],
    tp_dim: int | None,
    blocks: Sequence[int] | None = None,
    where: str = "",
) -> torch.Tensor:
    """The full tensor from its pieces in rank order; replicated pieces must be identical."""
    if not pieces:
        raise ConversionError(f"{where}: no pieces to merge")
    world = len(pieces)
    if tp_dim is None or world == 1:
        first = pieces[0]
        for r, p in enumerate(pieces[1:], start=1):
            if p.shape != first.shape or not torch.equal(p, first):
                raise ConversionError(
                    f"{where}: replicated tensor differs between tensor-parallel rank 0 and {r}"
                )
        return first
    size = sum(p.shape[tp_dim] for p in pieces)
    checked = _check_blocks(size, blocks, world, where)
    if checked is None:
        return torch.cat(list(pieces), dim=tp_dim)
    local = [b // world for b in checked]
    split_pieces = [p.split(local, dim=tp_dim) for p in pieces]
    return torch.cat(
        [torch.cat([sp[b] for sp in split_pieces], dim=tp_dim) for b in range(len(local))],
        dim=tp_dim,
    )
