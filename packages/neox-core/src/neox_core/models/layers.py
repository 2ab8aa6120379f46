"""The pieces of a decoder layer: norms, rotary embedding, attention, MLP.

Each projection is a plain `nn.Linear` (`qkv`, `out`, `fc_in`, `fc_out`) so that tensor
parallelism can later swap or wrap them from outside without touching this file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neox_core.models import flash_attention4, fused_ops
from neox_core.models.fused_ops import use_fused

# `enable_gqa` (torch >= 2.5): grouped-query attention without repeating k and v per query
# head. On the H200 cuDNN's kernel takes LLaMA-1.1B's attention fwd+bwd from 1.83 to 1.58 ms
# per layer this way, and the repeat and its backward's sum disappear.
_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def _half_on_gpu(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def _gqa_kernel_takes(q: torch.Tensor) -> bool:
    """Whether SDPA's cuDNN/flash kernels take `enable_gqa` for these (causal, unmasked)
    queries. Elsewhere (CPU, fp32, head dims above 256, masks) the memory-efficient kernel
    runs, which does not take it: SDPA would fall to its O(s^2)-memory math kernel."""
    return _SDPA_GQA and _half_on_gpu(q) and q.shape[-1] <= 256


class RMSNorm(nn.Module):
    """RMS normalisation as HF's LlamaRMSNorm computes it (eps inside the square root, in fp32).

    GPT-NeoX's own RMSNorm adds eps to the RMS instead; the two differ by O(eps) and neox
    follows HF so that converted checkpoints give the same logits.
    """

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    fused = False  # set by make_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self.fused, x, self.weight, kind="norm"):
            return fused_ops.norm(self, x)
        dtype = x.dtype
        x32 = x.to(torch.promote_types(dtype, torch.float32))  # fp64 stays fp64
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight * x32.to(dtype)
        return out + self.bias if self.bias is not None else out


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that takes the fused kernel when `fused` is set and it runs."""

    fused = False  # set by make_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self.fused, x, self.weight, kind="norm"):
            return fused_ops.norm(self, x)
        w, b = self.weight, self.bias
        if (
            w is not None
            and w.dtype != x.dtype
            and torch.promote_types(w.dtype, x.dtype) == x.dtype
        ):
            # bf16 weights (FSDP's bf16 gathers) on an fp32 residual stream: F.layer_norm takes
            # one dtype, and CPU autocast does not cast for it as CUDA autocast does
            w, b = w.to(x.dtype), b.to(x.dtype) if b is not None else None
            return F.layer_norm(x, self.normalized_shape, w, b, self.eps)
        return super().forward(x)


def make_norm(kind: str, dim: int, eps: float, bias: bool, fused: bool = False) -> nn.Module:
    if kind == "layernorm":
        norm: nn.Module = LayerNorm(dim, eps=eps, bias=bias)
    elif kind == "rmsnorm":
        norm = RMSNorm(dim, eps=eps, bias=bias)
    else:
        raise ValueError(f"unknown norm {kind!r}")
    norm.fused = fused
    return norm


class RotaryEmbedding(nn.Module):
    """cos/sin tables of rotary position embedding over the first `dim` channels of a head.

    The frequencies are computed in fp32 on every call rather than kept in a buffer: a buffer
    would be cast by `model.to(torch.bfloat16)`, and bf16 frequencies put the angles of late
    positions off by whole radians. Nothing rotary is stored in checkpoints.
    """

    def __init__(self, dim: int, base: float) -> None:
        super().__init__()
        self.dim = dim
        self.base = base

    def forward(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=device.type, enabled=False):
            exponents = torch.arange(0, self.dim, 2, dtype=torch.int64, device=device).float()
            inv_freq = 1.0 / (self.base ** (exponents / self.dim))
            positions = torch.arange(seq_len, device=device, dtype=torch.float32)
            freqs = torch.outer(positions, inv_freq)
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] channels of x [B, heads, S, head_dim]; pass the rest."""
    rot_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x_rot = x_rot * cos + _rotate_half(x_rot) * sin
    return torch.cat((x_rot, x_pass), dim=-1)


def causal_window_mask(q_len: int, kv_len: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean [q_len, kv_len] mask (True = attend) of causal attention within a window.

    The queries are the last `q_len` of `kv_len` positions (q_len == kv_len in training; 1 per
    step with a KV cache), and a query at position i sees keys i - window .. i: itself and the
    `window` before it, GPT-NeoX's `sliding_window_width` (flash-attn window (w, 0)).
    """
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device).unsqueeze(1)
    k_pos = torch.arange(kv_len, device=device).unsqueeze(0)
    return (k_pos <= q_pos) & (k_pos >= q_pos - window)


class Attention(nn.Module):
    """Causal self-attention with one fused QKV projection and grouped-query support.

    Layout of `qkv.weight` rows (GPT-NeoX's, at tensor-parallel size 1):
    - heads == kv_heads: per head, [q_h; k_h; v_h] blocks of head_dim rows (as HF GPTNeoX);
    - grouped-query: all query heads, then all key heads, then all value heads.

    `sliding_window`: each query sees only itself and that many positions before it (None:
    all earlier positions); see `causal_window_mask`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        rotary_dim: int,
        rotary_base: float,
        bias: bool,
        dropout: float,
        sliding_window: int | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.sliding_window = sliding_window
        self.fused = fused
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        qkv_out = (num_heads + 2 * num_kv_heads) * self.head_dim
        self.qkv = nn.Linear(hidden_size, qkv_out, bias=bias)
        self.out = nn.Linear(num_heads * self.head_dim, hidden_size, bias=bias)
        self.rotary = RotaryEmbedding(rotary_dim, rotary_base)
        # set where the projection's output is a view autograd guards against in-place writes
        # (fp8's Float8Linear makes it inside an autograd Function): the fused rotary then
        # rotates a copy, one read and write of qkv, instead of falling back to the plain code
        self.rotary_on_copy = False
        # "sdpa" or "fa4" (FlashAttention-4's kernels for causal attention on CUDA), set from
        # outside by distributed/attention_backend.py after timing both on this shape
        self.kernel = "sdpa"

    def split_qkv(self, mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, S, qkv_out] -> q [B, H, S, d], k and v [B, KV, S, d]."""
        b, s, _ = mixed.shape
        d = self.head_dim
        if self.num_kv_heads == self.num_heads:
            q, k, v = mixed.view(b, s, self.num_heads, 3 * d).split(d, dim=-1)
        else:
            q_size, kv_size = self.num_heads * d, self.num_kv_heads * d
            q, k, v = mixed.split((q_size, kv_size, kv_size), dim=-1)
            q = q.view(b, s, self.num_heads, d)
            k = k.view(b, s, self.num_kv_heads, d)
            v = v.view(b, s, self.num_kv_heads, d)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        mixed = self.qkv(x)
        # rotate q and k in place in the fused QKV output, or in a copy of a view that autograd
        # guards (`rotary_on_copy`; `owns` cannot tell inside a compiled region)
        if use_fused(self.fused, mixed, kind="rotary"):
            if self.rotary_on_copy or not fused_ops.owns(mixed):
                mixed = mixed.clone()
            h, kv, r = self.num_heads, self.num_kv_heads, self.rotary
            q, k, v = self.split_qkv(fused_ops.rotary_qkv_(mixed, h, kv, r.dim, r.base))
        else:
            q, k, v = self.split_qkv(mixed)
            cos, sin = self.rotary(s, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        causal = self.sliding_window is None or self.sliding_window >= s - 1
        dropout = self.dropout if self.training else 0.0
        if self.kernel == "fa4" and causal and dropout == 0.0 and _half_on_gpu(q):
            y = flash_attention4.causal_attention(q, k, v)  # repeats GQA's kv heads inside
        else:
            y = self._sdpa(q, k, v, causal, dropout)
        return self.out(y.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim))

    def _sdpa(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, dropout: float
    ) -> torch.Tensor:
        gqa = {}
        if self.num_kv_heads != self.num_heads:
            if causal and _gqa_kernel_takes(q):
                gqa = {"enable_gqa": True}  # each kv head read for its group of query heads
            else:
                repeat = self.num_heads // self.num_kv_heads
                k = k.repeat_interleave(repeat, dim=1)
                v = v.repeat_interleave(repeat, dim=1)
        if causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, **gqa)
        s = q.shape[2]
        mask = causal_window_mask(s, s, self.sliding_window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class MLP(nn.Module):
    """Two projections around GELU, or SwiGLU with the up and gate halves fused in `fc_in`.

    For SwiGLU `fc_in.weight` holds [up; gate] (GPT-NeoX's order): out = fc_out(up * silu(gate)).
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        activation: str,
        bias: bool,
        fused: bool = False,
    ):
        super().__init__()
        self.fused = fused
        if activation not in ("gelu", "swiglu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.gated = activation == "swiglu"
        width_in = 2 * intermediate_size if self.gated else intermediate_size
        self.fc_in = nn.Linear(hidden_size, width_in, bias=bias)
        self.fc_out = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc_in(x)
        if use_fused(self.fused, h, kind="activation"):
            h = fused_ops.swiglu(h) if self.gated else fused_ops.gelu(h)
        elif self.gated:
            up, gate = h.chunk(2, dim=-1)
            h = up * F.silu(gate)
        else:
            h = F.gelu(h)
        return self.fc_out(h)
