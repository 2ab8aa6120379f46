"""Incremental decoding of a `CausalLM` with a key/value cache, reusing the model's own layers.

The model file stays a plain training forward; this module walks the same modules (norms,
`qkv`, `out`, MLP, head) in the same order, adding what decoding needs: per-row positions (for
left-padded batches), a preallocated cache written in place, and an attention mask that hides
padding. The cache has a fixed size and every call attends over all of it (unwritten slots
masked), so a decode step has the same shapes every token and can be compiled once.

Each row of a batch is left-padded: its real tokens fill slots `pad[row]` onwards, contiguous.
So a slot's rotary position is `slot - pad[row]`, and a query at slot q sees the slots
pad[row] .. q: everything the mask needs comes from `pad` and the slot numbers, with nothing
to rebuild per token. The rotary tables are computed once per cache, in the model's dtype.

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
    """Per-layer keys and values [B, KV, T, d] and the token sequence they were computed from."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    tokens: torch.Tensor  # [B, T] int64: the token in each slot (prompt, then generated)
    pad: torch.Tensor  # [B] int64: left-padding slots of each row (its first real slot)
    cursor: torch.Tensor  # [1] int64: slot of the newest token, the one a decode step feeds
    cos: torch.Tensor  # [T, rotary_dim] rotary tables by position, in the model's dtype
    sin: torch.Tensor
    slot_ids: torch.Tensor  # [T] int64: 0 .. T-1, for masks

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def size(self) -> int:
        return self.tokens.shape[1]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a compiled step reads or writes (kept at fixed addresses)."""
        fixed = [self.tokens, self.pad, self.cursor, self.cos, self.sin, self.slot_ids]
        return [*self.keys, *self.values, *fixed]


def allocate_cache(model: CausalLM, batch: int, slots: int) -> KVCache:
    """A cache for `batch` rows of up to `slots` tokens, on the model's device/dtype.

    Nothing needs zeroing between uses: slots are read only after they are written.
    """
    head = model.head_weight()
    device, dtype = head.device, head.dtype
    attn = model.layers[0].attention
    shape = (batch, attn.num_kv_heads, slots, attn.head_dim)
    n = len(model.layers)
    keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)]
    values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)]
    # the rotary tables the layers compute (fp32), cast once as apply_rotary would each call
    cos, sin = attn.rotary(slots, device)
    return KVCache(
        keys=keys,
        values=values,
        tokens=torch.zeros(batch, slots, dtype=torch.long, device=device),
        pad=torch.zeros(batch, dtype=torch.long, device=device),
        cursor=torch.zeros(1, dtype=torch.long, device=device),
        cos=cos.to(dtype),
        sin=sin.to(dtype),
        slot_ids=torch.arange(slots, device=device),
    )


def _attention(
    attn: Attention,
    x: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    keys: torch.Tensor,
    values: torch.Tensor,
    slots: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    b, s, _ = x.shape
    q, k, v = attn.split_qkv(attn.qkv(x))
    # rotate queries and keys in one pass: half the kernels of two apply_rotary calls
    q, k = apply_rotary(torch.cat((q, k), dim=1), *rotary).split(
        (attn.num_heads, attn.num_kv_heads), dim=1
    )
    keys.index_copy_(2, slots, k)
    values.index_copy_(2, slots, v)
    groups = attn.num_heads // attn.num_kv_heads
    if groups > 1:
        # grouped-query: fold the query heads of each key/value head into the query length
        # instead of copying the whole cache `groups` times (repeat_interleave) every token
        q = q.reshape(b, attn.num_kv_heads, groups * s, attn.head_dim)
        if s > 1:
            mask = mask.repeat(1, 1, groups, 1)
    y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    y = y.reshape(b, attn.num_heads, s, attn.head_dim)
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
    a = _attention(layer.attention, layer.input_norm(x), rotary, keys, values, slots, mask)
    if layer.parallel_residual:
        return x + a + layer.mlp(layer.post_attention_norm(x))
    x = x + a
    return x + layer.mlp(layer.post_attention_norm(x))


def forward_cached(
    model: CausalLM, cache: KVCache, input_ids: torch.Tensor, start: torch.Tensor
) -> torch.Tensor:
    """Logits [B, S, V] of `input_ids` [B, S] written at cache slots start .. start+S-1.

    `start` is a [1] int64 tensor (a tensor, so a compiled step does not specialise on it).
    A token at slot q attends to its row's real tokens in slots pad .. q (with sliding-window
    attention only the `window` before it as well); a padding token attends only to itself,
    so no row is fully masked and no NaN reaches the cache.
    """
    s = input_ids.shape[1]
    slots = start if s == 1 else start + torch.arange(s, device=start.device)
    positions = (slots[None, :] - cache.pad[:, None]).clamp(min=0)  # [B, S]
    rotary = cache.cos[positions].unsqueeze(1), cache.sin[positions].unsqueeze(1)
    key, query = cache.slot_ids[None, None, :], slots[None, :, None]  # [1, 1, T], [1, S, 1]
    visible = (key >= cache.pad[:, None, None]) & (key <= query)  # [B, S, T]
    window = model.layers[0].attention.sliding_window if len(model.layers) else None
    if window is not None:  # Mistral: a query sees itself and `window` earlier positions
        visible = visible & (key >= query - window)
    visible = visible | (key == query)
    x = model.embed(input_ids)
    # one additive mask for every layer (SDPA would convert a boolean one in each)
    mask = torch.zeros(visible.shape, dtype=x.dtype, device=x.device)
    mask = mask.masked_fill(~visible, float("-inf")).unsqueeze(1)  # [B, 1, S, T]
    for i, layer in enumerate(model.layers):
        x = _layer(layer, x, rotary, cache.keys[i], cache.values[i], slots, mask)
    x = model.final_norm(x)
    return F.linear(x, model.head_weight())
