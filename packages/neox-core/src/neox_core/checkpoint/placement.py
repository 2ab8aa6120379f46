"""Where a stored piece, or a rank's local tensor, sits in the full (canonical) tensor.

Every piece of a checkpoint -- a TP shard of a weight (format v1), or a chunk of optimizer
state inside one (format v2) -- and every rank's local slice of a parameter is described here
the same way: for each dimension, the canonical indices it covers, in local order. Tensor
parallelism cuts one dimension (fused tensors block by block, `tp_blocks`), data-parallel
sharding then cuts a box out of the TP shard, so a piece is always the Cartesian product of
its per-dimension index lists. Two pieces overlap where every dimension's lists intersect,
which is all a loader needs to copy between any two layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neox_core.checkpoint.sharding import ShardInfo


def tp_shard_rows(
    size: int, world: int, rank: int, blocks: Sequence[int] | None = None
) -> np.ndarray:
    """Canonical indices, along the split dimension, of TP shard `rank` of `world`.

    Without blocks the shard is the contiguous `rank`-th `1/world`; with blocks it is the
    `rank`-th `1/world` of each block, concatenated (neox_ckpt/tp_split.py's cut).
    """
    blocks = tuple(blocks) if blocks else (size,)
    if sum(blocks) != size:
        raise ValueError(f"fused blocks {list(blocks)} do not add up to {size}")
    parts = []
    start = 0
    for b in blocks:
        if b % world:
            raise ValueError(f"block of {b} rows does not divide by tensor-parallel size {world}")
        piece = b // world
        parts.append(np.arange(start + rank * piece, start + (rank + 1) * piece))
        start += b
    return np.concatenate(parts).astype(np.int64)


def tp_concat_rows(size: int, world: int, blocks: Sequence[int] | None = None) -> np.ndarray:
    """Canonical index of every row of the TP shards laid end to end in rank order.

    That concatenation is a TP-sharded DTensor's global tensor: its contiguous `Shard` chunk
    on TP rank r is exactly the checkpoint's shard r.
    """
    return np.concatenate([tp_shard_rows(size, world, r, blocks) for r in range(world)])


@dataclass(frozen=True)
class Region:
    """A piece of one tensor: per dimension, the canonical indices it holds (local order)."""

    axes: tuple[np.ndarray, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)


def shard_region(info: ShardInfo) -> Region:
    """The region of the TP shard a shard record describes."""
    axes = []
    for dim, size in enumerate(info.full_shape):
        if dim == info.tp_dim:
            axes.append(tp_shard_rows(size, info.tp_world_size, info.tp_rank, info.tp_blocks))
        else:
            axes.append(np.arange(size, dtype=np.int64))
    return Region(tuple(axes))


def chunk_region(
    info: ShardInfo, offset: Sequence[int] | None, shape: Sequence[int] | None
) -> Region:
    """A chunk at `offset` of `shape` inside the TP shard `info` (the whole shard if None)."""
    shard = shard_region(info)
    if offset is None or shape is None:
        return shard
    if len(offset) != len(shard.axes) or len(shape) != len(shard.axes):
        raise ValueError(
            f"chunk offset {list(offset)} / shape {list(shape)} do not match a tensor of "
            f"{len(shard.axes)} dims"
        )
    axes = []
    for a, o, n in zip(shard.axes, offset, shape, strict=True):
        if o < 0 or o + n > len(a):
            raise ValueError(f"chunk [{o}, {o + n}) lies outside a shard of {len(a)} rows")
        axes.append(a[o : o + n])
    return Region(tuple(axes))


def overlap(target: Region, source: Region) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """(positions in target, positions in source) per dimension where both hold the same
    canonical indices; None if they share nothing."""
    tpos, spos = [], []
    for t, s in zip(target.axes, source.axes, strict=True):
        _, ti, si = np.intersect1d(t, s, assume_unique=True, return_indices=True)
        if len(ti) == 0:
            return None
        tpos.append(ti)
        spos.append(si)
    return tpos, spos


def index_grid(positions: Sequence[np.ndarray]) -> tuple[torch.Tensor | slice, ...]:
    """An index selecting the Cartesian product of `positions`: slices where a dimension's
    positions are a contiguous run (a view, no gather), index tensors elsewhere."""
    contiguous = [
        len(p) > 0 and int(p[-1]) - int(p[0]) + 1 == len(p) and bool(np.all(np.diff(p) == 1))
        for p in positions
    ]
    if all(contiguous):
        return tuple(slice(int(p[0]), int(p[-1]) + 1) for p in positions)
    if sum(not c for c in contiguous) == 1:  # one advanced index keeps its place
        return tuple(
            slice(int(p[0]), int(p[-1]) + 1) if c else torch.from_numpy(np.ascontiguousarray(p))
            for p, c in zip(positions, contiguous, strict=True)
        )
    n = len(positions)
    return tuple(
        torch.from_numpy(np.ascontiguousarray(p)).view([-1 if i == d else 1 for i in range(n)])
        for d, p in enumerate(positions)
    )
