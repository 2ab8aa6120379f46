"""FlashAttention-4's causal attention as PyTorch custom ops, for Hopper and newer GPUs.

Why: FA4's kernels (the `flash-attn-4` package, written in the CuTe DSL) run a causal forward
and backward faster than SDPA's cuDNN kernel at head dim 64 on the H200 (Pythia-410M and
LLaMA-1.1B shapes); at head dims 128-256 cuDNN is faster. So FA4 is one more candidate that
`distributed/attention_backend.py` times on the model's own shape, never a default.

The ops (`neox_fa4::fwd`, `neox_fa4::bwd`) have fake implementations and an autograd formula,
so a compiled decoder layer traces through them as one node each, as it does through SDPA.
FA4 is optional: it is imported on first use, and `unavailable_reason` says why it cannot run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

_MODULE = "flash_attn.cute.interface"
_IMPORTED: Any = None


def _interface() -> Any:
    global _IMPORTED
    if _IMPORTED is None:
        import importlib

        _IMPORTED = importlib.import_module(_MODULE)
    return _IMPORTED


# tests/neox-core/models/test_flash_attention4.py on an H100 (flash-attn-4 4.0.0b36): multi-head
# FA4 against fp32 attention passed at head dims 64, 128 and 256. It failed at 16 (eager and
# compiled) and 32 (compiled), and at 80 (Pythia-2.8B's) its dq was off by 1.3-1.7 where
# SDPA's was within 0.02, eager and compiled; 96 passed eager, compiled not run. Elsewhere neox
# keeps SDPA.
HEAD_DIMS = (64, 128, 256)


def head_dim_reason(head_dim: int) -> str | None:
    """Why FA4 is not used at this head dim on any GPU (None: it may be)."""
    if head_dim not in HEAD_DIMS:
        dims = ", ".join(map(str, HEAD_DIMS))
        return (
            f"FlashAttention-4 is used at head dims {dims} only (this model: {head_dim}): "
            "elsewhere it disagreed with fp32 attention in neox's GPU tests or was not "
            "verified (flash-attn-4 4.0.0b36; wrong at 16, 32 and 80)"
        )
    return None


def unavailable_reason(device: torch.device, head_dim: int) -> str | None:
    """Why FA4 cannot run here (None: it can). Imports flash_attn.cute when the GPU could."""
    if device.type != "cuda":
        return "FlashAttention-4 runs on CUDA GPUs only"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        return f"FlashAttention-4 needs compute capability 9.0 or newer (this GPU: {major}.{minor})"
    top = 256 if major == 9 else 128  # Blackwell's kernels: 8-128, and 256
    if head_dim % 8 or not (8 <= head_dim <= top or head_dim == 256):
        return f"FlashAttention-4 takes head dims 8-{top} in multiples of 8 here, not {head_dim}"
    why = head_dim_reason(head_dim)
    if why:
        return why
    try:
        _interface()
    except Exception as e:  # ImportError, or the CuTe DSL runtime failing to load
        return f"flash-attn-4 is not importable ({type(e).__name__}: {e})"
    return None


# Grouped-query attention (fewer kv heads than query heads) runs FA4's multi-head kernels on k
# and v repeated per query head, inside the ops: FA4's own grouped-query backward gave wrong
# gradients in neox's GPU tests (flash-attn-4 4.0.0b36; attention_backend's note), its
# multi-head one did not. The ops save k and v as given; the repeat is made again in the
# backward and its gradient summed back per kv head in fp32, as SDPA's enable_gqa does.
def _repeat_kv(x: Tensor, groups: int) -> Tensor:
    """[B, S, KV, d] -> [B, S, KV * groups, d]: kv head j serves query heads j*groups ..
    (j+1)*groups-1, the order of SDPA's enable_gqa."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=2)


def _sum_groups(grad: Tensor, groups: int) -> Tensor:
    """The gradient of `_repeat_kv`: [B, S, KV * groups, d] summed back to [B, S, KV, d]."""
    if groups == 1:
        return grad
    b, s, h, d = grad.shape
    acc = torch.promote_types(grad.dtype, torch.float32)  # bf16/fp16 gradients sum in fp32
    summed = grad.reshape(b, s, h // groups, groups, d).sum(3, dtype=acc).to(grad.dtype)
    return summed.contiguous()  # the layout the ops' fake kernel promises, whatever grad's


def _groups(q: Tensor, k: Tensor) -> int:
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"{q.shape[2]} query heads do not share {k.shape[2]} kv heads evenly")
    return q.shape[2] // k.shape[2]


@torch.library.custom_op("neox_fa4::fwd", mutates_args=(), device_types="cuda")
def _fwd(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    g = _groups(q, k)
    out, lse, *_ = _interface()._flash_attn_fwd(
        q, _repeat_kv(k, g), _repeat_kv(v, g), softmax_scale=scale, causal=True, return_lse=True
    )
    return out, lse


@_fwd.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    b, s, h, _ = q.shape
    return q.new_empty(b, s, h, v.shape[-1]), q.new_empty((b, h, s), dtype=torch.float32)


@torch.library.custom_op("neox_fa4::bwd", mutates_args=(), device_types="cuda")
def _bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    g = _groups(q, k)
    grads = _interface()._flash_attn_bwd(
        q, _repeat_kv(k, g), _repeat_kv(v, g), out, dout.contiguous(), lse, scale, True
    )
    return grads[0], _sum_groups(grads[1], g), _sum_groups(grads[2], g)


@_bwd.register_fake
def _(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    if q.shape[2] == k.shape[2]:  # FA4's own gradients, laid out as its inputs
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    # grouped-query: dk and dv are `_sum_groups`'s reductions, contiguous whatever k and v are
    return torch.empty_like(q), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale


def _backward(ctx: Any, dout: Tensor, _dlse: Tensor | None) -> tuple[Any, ...]:
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _bwd(dout, q, k, v, out, lse, ctx.scale)
    return dq, dk, dv, None


_fwd.register_autograd(_backward, setup_context=_setup_context)


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SDPA's layout in and out: q [B, H, S, d], k and v [B, KV, S, d] -> [B, H, S, d].

    Causal, softmax scale 1/sqrt(d), no dropout; KV < H (grouped-query, H a multiple of KV)
    runs on k and v repeated per query head (`_repeat_kv`). FA4 reads [B, S, H, d], which is
    what the transposes below give back as views of the fused QKV output, so no copy of q is
    made on either side.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    out, _ = _fwd(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale)
    return out.transpose(1, 2)
