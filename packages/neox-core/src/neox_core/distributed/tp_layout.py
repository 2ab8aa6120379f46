"""Where each canonical weight's rows live under tensor parallelism, as plain tensor maths.

The tensor-parallel model keeps every parameter as a DTensor whose local piece on TP rank r is
exactly the checkpoint's TP shard r (checkpoint/sharding.py metadata, neox-ckpt's `tp_split`):
a contiguous cut along `tp_dim`, made block by block for fused tensors (`tp_blocks`: grouped-query
[q; k; v], SwiGLU [up; gate]). So a DTensor's *global* tensor (what `full_tensor()` returns) is
the canonical tensor with the rows of each fused block interleaved by rank. These functions map
between the two, for checkpoint save/load and for tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neox_core.checkpoint.sharding import fused_tp_blocks, tp_split_dim
from neox_core.config.schema import ModelConfig


def _check(size: int, world: int, blocks: Sequence[int] | None, what: str) -> tuple[int, ...]:
    parts = tuple(blocks) if blocks is not None else (size,)
    if sum(parts) != size:
        raise ValueError(f"{what}: fused blocks {list(parts)} do not add up to {size}")
    for b in parts:
        if b % world:
            raise ValueError(f"{what}: block of {b} rows is not divisible by TP size {world}")
    return parts


def tp_local_shard(
    full: torch.Tensor,
    tp_dim: int | None,
    tp_world_size: int,
    tp_rank: int,
    tp_blocks: Sequence[int] | None = None,
) -> torch.Tensor:
    """TP rank `tp_rank`'s piece of the canonical tensor `full` (its DTensor `to_local()`)."""
    if tp_dim is None or tp_world_size == 1:
        return full
    parts = _check(full.shape[tp_dim], tp_world_size, tp_blocks, "tp_local_shard")
    pieces = [b.chunk(tp_world_size, dim=tp_dim)[tp_rank] for b in full.split(parts, dim=tp_dim)]
    return pieces[0].contiguous() if len(pieces) == 1 else torch.cat(pieces, dim=tp_dim)


def canonical_to_tp_global(
    full: torch.Tensor,
    tp_dim: int | None,
    tp_world_size: int,
    tp_blocks: Sequence[int] | None = None,
) -> torch.Tensor:
    """The DTensor global tensor for canonical `full`: rank pieces concatenated in rank order."""
    if tp_dim is None or tp_world_size == 1 or tp_blocks is None:
        return full
    return torch.cat(
        [tp_local_shard(full, tp_dim, tp_world_size, r, tp_blocks) for r in range(tp_world_size)],
        dim=tp_dim,
    )


def tp_global_to_canonical(
    glob: torch.Tensor,
    tp_dim: int | None,
    tp_world_size: int,
    tp_blocks: Sequence[int] | None = None,
) -> torch.Tensor:
    """Inverse of `canonical_to_tp_global`: the canonical tensor from a DTensor's global one."""
    if tp_dim is None or tp_world_size == 1 or tp_blocks is None:
        return glob
    parts = _check(glob.shape[tp_dim], tp_world_size, tp_blocks, "tp_global_to_canonical")
    local = [b // tp_world_size for b in parts]
    per_rank = [p.split(local, dim=tp_dim) for p in glob.chunk(tp_world_size, dim=tp_dim)]
    return torch.cat(
        [torch.cat([pr[b] for pr in per_rank], dim=tp_dim) for b in range(len(local))],
        dim=tp_dim,
    )


def tp_param_layout(cfg: ModelConfig) -> dict[str, tuple[int | None, tuple[int, ...] | None]]:
    """name -> (tp_dim, tp_blocks) for every canonical parameter of a `CausalLM(cfg)`."""
    from neox_core.models.decoder import CausalLM

    with torch.device("meta"):
        model = CausalLM(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    heads = cfg.num_attention_heads
    blocks = fused_tp_blocks(
        shapes,
        num_heads=heads,
        num_kv_heads=cfg.num_kv_heads or heads,
        head_dim=cfg.hidden_size // heads,
        intermediate_size=int(cfg.intermediate_size or 0),
        gated_mlp=cfg.activation == "swiglu",
    )
    return {n: (tp_split_dim(n, len(s)), blocks.get(n)) for n, s in shapes.items()}
