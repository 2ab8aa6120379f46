"""This rank's piece of each parameter (plain tensor or DTensor), in checkpoint terms.

A parallelized model holds DTensors: tensor parallelism shards the TP dimension (`Shard(d)` on
the "tp" mesh dimension), FSDP2 shards the TP-local tensor again over "dp" (`Shard(0)`, or
`_StridedShard` when both cut the same dimension). The convention shared with
`distributed/tensor_parallel.py` is that a DTensor's global tensor is the format-v1 TP shards
laid end to end, so a rank's local box always lies inside one TP shard and is described by
that shard's record plus an offset and shape inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neox_core.checkpoint.placement import Region, chunk_region
from neox_core.checkpoint.sharding import ShardInfo, tp_split_dim

TP_DIM_NAME = "tp"


@dataclass(frozen=True)
class LocalPiece:
    """Where this rank's local tensor of one parameter sits in the checkpoint's terms."""

    info: ShardInfo  # the TP shard the local tensor lies in
    chunk_offset: tuple[int, ...]  # inside that TP shard
    chunk_shape: tuple[int, ...]
    owner: bool  # this rank's copy is the one saved (first of every replicated mesh dim)

    @property
    def whole_shard(self) -> bool:
        return self.chunk_shape == tuple(self.info.shard_shape())

    def region(self) -> Region:
        return chunk_region(self.info, self.chunk_offset, self.chunk_shape)

    def record(self) -> dict[str, object]:
        """The v2 shard record of a stored chunk: v1's fields plus `chunk_offset/shape`."""
        return {
            **self.info.to_json(),
            "chunk_offset": list(self.chunk_offset),
            "chunk_shape": list(self.chunk_shape),
        }


def is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]


def _sharded(placement: Any) -> bool:
    """Shard or FSDP2's _StridedShard (which is not a Shard, and whose is_shard() is False)."""
    return not (placement.is_replicate() or placement.is_partial())


def _tp_placement(t: torch.Tensor) -> tuple[int | None, int, int]:
    """(split dim or None, TP size, TP rank) of a DTensor's "tp" mesh dimension."""
    mesh = t.device_mesh  # type: ignore[attr-defined]
    names = mesh.mesh_dim_names or ()
    if TP_DIM_NAME not in names:
        return None, 1, 0
    i = names.index(TP_DIM_NAME)
    placement = t.placements[i]  # type: ignore[attr-defined]
    dim = placement.dim if _sharded(placement) else None  # type: ignore[attr-defined]
    return dim, mesh.size(i), mesh.get_local_rank(i)


def describe_local(
    name: str,
    t: torch.Tensor,
    *,
    tp_blocks: Sequence[int] | None,
    tp_size: int,
    tp_rank: int,
    first_replica: bool,
    pp_stage: int = 0,
    pp_size: int = 1,
) -> LocalPiece:
    """The `LocalPiece` of parameter (or state tensor) `name` held as `t` on this rank.

    `tp_size`/`tp_rank` are this rank's TP coordinates; `first_replica` whether this rank is
    the first of its copies for a plain (non-DTensor) tensor; `pp_stage`/`pp_size` the
    pipeline rank whose `model_tp<TT>_pp<PP>` file records it (the format's shard record).
    """
    full = tuple(t.shape)
    ndim = len(full)
    if not is_dtensor(t):
        dim = tp_split_dim(name, ndim) if tp_size == 1 else None
        info = ShardInfo(
            dim, tp_rank, tp_size, pp_stage, pp_size, full, _blocks(dim, tp_blocks, tp_size)
        )
        return LocalPiece(info, (0,) * ndim, full, first_replica)

    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    dim, world, rank = _tp_placement(t)
    if world == 1:
        dim = tp_split_dim(name, ndim)
    elif world != tp_size or rank != tp_rank:
        raise ValueError(f"{name}: sharded over a TP mesh of {world} (rank {rank}), not {tp_size}")
    mesh = t.device_mesh  # type: ignore[attr-defined]
    placements = t.placements  # type: ignore[attr-defined]
    local_shape, global_offset = compute_local_shape_and_global_offset(full, mesh, placements)
    offset = list(global_offset)
    if dim is not None and world > 1:
        piece = full[dim] // world
        offset[dim] -= rank * piece
        if full[dim] % world or offset[dim] < 0 or offset[dim] + local_shape[dim] > piece:
            raise ValueError(
                f"{name}: local rows [{global_offset[dim]}, "
                f"{global_offset[dim] + local_shape[dim]}) of TP rank {rank} do not lie inside "
                f"its shard of {piece} rows along dim {dim}"
            )
    owner = all(_sharded(p) or mesh.get_local_rank(i) == 0 for i, p in enumerate(placements))
    if world > 1:
        info = ShardInfo(dim, rank, world, pp_stage, pp_size, full, _blocks(dim, tp_blocks, world))
    elif tp_size > 1:
        # sharded over dp only and replicated over TP (e.g. a norm): stored as replicated,
        # saved by TP rank 0
        info = ShardInfo(None, tp_rank, tp_size, pp_stage, pp_size, full, None)
        owner = owner and tp_rank == 0
    else:
        info = ShardInfo(dim, 0, 1, pp_stage, pp_size, full, _blocks(dim, tp_blocks, 1))
    return LocalPiece(info, tuple(offset), tuple(local_shape), owner)


def _blocks(dim: int | None, blocks: Sequence[int] | None, world: int) -> tuple[int, ...] | None:
    return tuple(blocks) if dim is not None and blocks else None
