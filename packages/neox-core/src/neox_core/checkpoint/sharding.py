"""How each weight is split across tensor-parallel ranks, recorded per tensor in checkpoints.

Tools (neox-ckpt) merge or re-split shards from this metadata alone, without model code:
`tp_dim` is the dimension the full tensor was cut along (None: every rank holds a full copy),
`tp_rank`/`tp_world_size` say which piece this is, `pp_stage`/`pp_world_size` which pipeline
stage holds it, and `full_shape` the shape before the split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

# (pattern on the parameter name, split dim of `.weight`, split dim of `.bias`).
# Column-parallel layers (outputs split) cut dim 0 of weight and bias; row-parallel layers
# (inputs split) cut dim 1 of the weight and replicate the bias; embeddings are vocab-parallel.
_RULES: tuple[tuple[re.Pattern[str], int | None, int | None], ...] = tuple(
    (re.compile(p), w, b)
    for p, w, b in (
        (r"(^|\.)[^.]*(norm|ln_f|ln_\d)[^.]*\.", None, None),
        (r"(^|\.)(embed|embed_in|embed_tokens|wte|word_embeddings|tok_embeddings)\.", 0, None),
        (r"(^|\.)(lm_head|embed_out|output|output_layer|unembed)\.", 0, 0),
        (r"(^|\.)(qkv|query_key_value|wqkv|q_proj|k_proj|v_proj|wq|wk|wv)\.", 0, 0),
        (r"(^|\.)(out|dense|o_proj|out_proj|wo)\.", 1, None),
        (r"(^|\.)(fc_in|dense_h_to_4h|up_proj|gate_proj|w1|w3)\.", 0, 0),
        (r"(^|\.)(fc_out|dense_4h_to_h|down_proj|w2)\.", 1, None),
        (r"^score\.", None, None),  # neox-posttrain's reward head [1, hidden]: replicated
    )
)


@dataclass(frozen=True)
class ShardInfo:
    """Where one stored tensor sits in the full model."""

    tp_dim: int | None
    tp_rank: int
    tp_world_size: int
    pp_stage: int
    pp_world_size: int
    full_shape: tuple[int, ...]
    # sizes (along tp_dim, in the full tensor) of fused blocks that are each split across
    # ranks separately, e.g. SwiGLU [up; gate] or grouped-query [q; k; v]; None = one block
    tp_blocks: tuple[int, ...] | None = None

    def shard_shape(self) -> tuple[int, ...]:
        """The shape of the stored piece (the full shape cut along `tp_dim`)."""
        shape = list(self.full_shape)
        if self.tp_dim is not None:
            shape[self.tp_dim] //= self.tp_world_size
        return tuple(shape)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["full_shape"] = list(self.full_shape)
        d["tp_blocks"] = None if self.tp_blocks is None else list(self.tp_blocks)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> ShardInfo:
        try:
            return cls(
                tp_dim=None if d["tp_dim"] is None else int(d["tp_dim"]),  # type: ignore[arg-type]
                tp_rank=int(d["tp_rank"]),  # type: ignore[arg-type]
                tp_world_size=int(d["tp_world_size"]),  # type: ignore[arg-type]
                pp_stage=int(d["pp_stage"]),  # type: ignore[arg-type]
                pp_world_size=int(d["pp_world_size"]),  # type: ignore[arg-type]
                full_shape=tuple(int(x) for x in d["full_shape"]),  # type: ignore[union-attr]
                tp_blocks=None
                if d.get("tp_blocks") is None
                else tuple(int(x) for x in d["tp_blocks"]),  # type: ignore[union-attr]
            )
        except KeyError as e:
            raise ValueError(f"shard metadata lacks key {e}: {dict(d)}") from None


def tp_split_dim(name: str, ndim: int) -> int | None:
    """The tensor-parallel split dim of a parameter named as in neox's models.

    Raises for a name no rule covers, so a new layer cannot silently be saved as replicated.
    """
    if ndim == 0:
        return None
    probe = name if name.endswith((".weight", ".bias")) else name + "."
    is_bias = name.endswith(".bias")
    for pattern, weight_dim, bias_dim in _RULES:
        if pattern.search(probe):
            dim = bias_dim if is_bias else weight_dim
            return dim if dim is None or dim < ndim else None
    raise ValueError(
        f"no tensor-parallel split rule matches parameter {name!r}; add one to "
        "neox_core/checkpoint/sharding.py"
    )


def shard_infos(
    tensors: Mapping[str, tuple[int, ...]] | Iterable[tuple[str, tuple[int, ...]]],
    *,
    tp_rank: int = 0,
    tp_world_size: int = 1,
    pp_stage: int = 0,
    pp_world_size: int = 1,
    split_dims: Mapping[str, int | None] | None = None,
    tp_blocks: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, ShardInfo]:
    """Shard metadata for tensors given by (name, local shape), split dims from the rules."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    out: dict[str, ShardInfo] = {}
    for name, shape in items:
        dim = (
            split_dims[name]
            if split_dims and name in split_dims
            else tp_split_dim(name, len(shape))
        )
        full = list(shape)
        if dim is not None:
            full[dim] *= tp_world_size
        blocks = tuple(tp_blocks[name]) if tp_blocks and name in tp_blocks else None
        out[name] = ShardInfo(
            dim, tp_rank, tp_world_size, pp_stage, pp_world_size, tuple(full), blocks
        )
    return out


def fused_tp_blocks(
    names: Iterable[str],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    intermediate_size: int,
    gated_mlp: bool,
) -> dict[str, tuple[int, ...]]:
    """Fused-block sizes of neox's models: grouped-query QKV and SwiGLU `fc_in`.

    Multi-head QKV is laid out per head ([q_h; k_h; v_h]), so a plain contiguous cut keeps
    heads whole and needs no blocks.
    """
    out: dict[str, tuple[int, ...]] = {}
    for name in names:
        if name.endswith(("attention.qkv.weight", "attention.qkv.bias")):
            if num_kv_heads != num_heads:
                kv = num_kv_heads * head_dim
                out[name] = (num_heads * head_dim, kv, kv)
        elif gated_mlp and name.endswith(("mlp.fc_in.weight", "mlp.fc_in.bias")):
            out[name] = (intermediate_size, intermediate_size)
    return out
