"""Incremental decoding of a `CausalLM` with a key/value cache, reusing the model's own layers.

The model file stays a plain training forward; this module walks the same modules (norms,
`qkv`, `out`, MLP, head) in the same order, adding what decoding needs: per-row positions (for
left-padded batches), a preallocated cache written in place, and an attention mask that hides
padding. The cache has a fixed size and every step attends over all of it (unwritten slots
masked), so shapes do not change from step to step and the decode step can be compiled.

Shapes: B rows, S new tokens this call, T cache slots, KV key/value heads, d head size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neox_core.models.decoder import CausalLM, DecoderLayer
from neox_core.models.layers import Attention, apply_rotary


@dataclass
class KVCache:
    """Per-layer keys and values [B, KV, T, d], and which slots hold real (non-pad) tokens."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor  # [B, T] bool: slot holds a real token (set when it is written)
    cos: torch.Tensor  # [T, rotary_dim] fp32 rotary tables by position
    sin: torch.Tensor

    @property
    def size(self) -> int:
        return self.valid.shape[1]


def allocate_cache(model: CausalLM, batch: int, slots: int) -> KVCache:
    """A zeroed cache for `batch` rows of up to `slots` tokens, on the model's device/dtype."""
    head = model.head_weight()
    device, dtype = head.device, head.dtype
    attn = model.layers[0].attention
    shape = (batch, attn.num_kv_heads, slots, attn.head_dim)
    n = len(model.layers)
    keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)]
    values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)]
    # the rotary tables the layers compute, for every position the cache can hold
    cos, sin = attn.rotary(slots, device)
    valid = torch.zeros(batch, slots, dtype=torch.bool, device=device)
    return KVCache(keys, values, valid, cos, sin)


def _attention(
    attn: Attention,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    slots: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    b, s, _ = x.shape
    q, k, v = attn.split_qkv(attn.qkv(x))
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    keys.index_copy_(2, slots, k.to(keys.dtype))
    values.index_copy_(2, slots, v.to(values.dtype))
    k_all, v_all = keys, values
    if attn.num_kv_heads != attn.num_heads:
        repeat = attn.num_heads // attn.num_kv_heads
        k_all = k_all.repeat_interleave(repeat, dim=1)
        v_all = v_all.repeat_interleave(repeat, dim=1)
    y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
    return attn.out(y.transpose(1, 2).reshape(b, s, attn.num_heads * attn.head_dim))


def _layer(
    layer: DecoderLayer,
    x: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    keys: torch.Tensor,
    values: torch.Tensor,
    slots: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    cos, sin = rotary
    a = _attention(layer.attention, layer.input_norm(x), cos, sin, keys, values, slots, mask)
    if layer.parallel_residual:
        return x + a + layer.mlp(layer.post_attention_norm(x))
    x = x + a
    return x + layer.mlp(layer.post_attention_norm(x))


def forward_cached(
    model: CausalLM,
    cache: KVCache,
    input_ids: torch.Tensor,
    slots: torch.Tensor,
    real: torch.Tensor,
) -> torch.Tensor:
    """Logits [B, S, V] of `input_ids` [B, S] written at cache `slots` [S] (int64, ascending).

    `real` [B, S] marks tokens that are not padding. A token attends to real tokens in earlier
    or equal slots; its position (for rotary) is the number of real tokens before it in its row.
    Padding attends only to itself, so no row is fully masked and no NaN can reach the cache.
    With sliding-window attention a token also sees only the `window` real tokens before it.
    """
    cache.valid.index_copy_(1, slots, real)
    # positions: real tokens counted from the row's first real one; padding gets 0
    positions = (cache.valid.long().cumsum(1) - 1).clamp(min=0).index_select(1, slots)
    cos = cache.cos[positions].unsqueeze(1)  # [B, 1, S, rot]
    sin = cache.sin[positions].unsqueeze(1)
    all_slots = torch.arange(cache.size, device=slots.device)
    causal = all_slots[None, :] <= slots[:, None]  # [S, T]
    self_slot = all_slots[None, :] == slots[:, None]
    mask = causal[None] & cache.valid[:, None, :]  # [B, S, T]
    window = model.layers[0].attention.sliding_window if len(model.layers) else None
    if window is not None:  # Mistral: a query sees itself and `window` earlier positions
        key_positions = cache.valid.long().cumsum(1) - 1  # [B, T]
        mask = mask & (key_positions[:, None, :] >= positions[:, :, None] - window)
    mask = mask | self_slot[None]
    mask = mask.unsqueeze(1)  # [B, 1, S, T]
    x = model.embed(input_ids)
    for i, layer in enumerate(model.layers):
        x = _layer(layer, x, (cos, sin), cache.keys[i], cache.values[i], slots, mask)
    x = model.final_norm(x)
    return F.linear(x, model.head_weight())
