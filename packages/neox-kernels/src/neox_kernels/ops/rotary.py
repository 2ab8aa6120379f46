"""Rotary position embedding applied in place to the fused QKV activation.

Layouts of the last dim of qkv [batch, seq, width] (GPT-NeoX's, as neox-core's Attention):
- `grouped=False` (heads == kv_heads): per head [q_h; k_h; v_h], each head_dim wide;
- `grouped=True`: all query heads, then all key heads, then all value heads.
Rotation is GPT-NeoX's rotate-half over the first `rotary_dim` channels of each query and key
head (partial rotary when rotary_dim < head_dim); values are untouched. Angles are
position * inv_freq in fp32, inv_freq = 1 / base^(2i / rotary_dim) (as the reference model).
The backward rotates the incoming gradient back into a new tensor (`neox::rotary`), in one pass;
in a compiled graph it rotates in place a clone that inductor fuses into the op making the
gradient, so beyond that op's own write only the rotated channels are read and written again.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neox_kernels.ops import _backend as be

_ARGS = (
    "Tensor inv_freq, int num_q, int q_offset, int q_stride, int num_k, int k_offset,"
    " int k_stride, int rot_half, int position_offset, bool inverse"
)


def inv_frequencies(rotary_dim: int, base: float, device: torch.device) -> Tensor:
    """1 / base^(2i / rotary_dim) in fp32, computed exactly as the reference model does."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float()
    return 1.0 / (base ** (exponents / rotary_dim))


def _reference(qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
               position_offset, inverse):  # fmt: skip
    seq = qkv.shape[1]
    positions = torch.arange(seq, device=qkv.device, dtype=torch.float32) + position_offset
    angles = torch.outer(positions, inv_freq)
    if qkv.dtype == torch.float64:
        angles = angles.double()  # [S, rot_half]
    cos, sin = angles.cos()[None], angles.sin()[None]
    if inverse:
        sin = -sin
    starts = [q_offset + h * q_stride for h in range(num_q)]
    starts += [k_offset + h * k_stride for h in range(num_k)]
    for start in starts:
        x1 = qkv[..., start : start + rot_half]
        x2 = qkv[..., start + rot_half : start + 2 * rot_half]
        a, b = be.acc(x1), be.acc(x2)
        new1, new2 = a * cos - b * sin, b * cos + a * sin
        x1.copy_(new1)
        x2.copy_(new2)


@torch.library.custom_op(
    "neox::rotary_", mutates_args=("qkv",), schema=f"(Tensor(a!) qkv, {_ARGS}) -> ()"
)
def rotary_(qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
            position_offset, inverse):  # fmt: skip
    if qkv.dim() != 3:
        raise ValueError(f"rotary_ expects qkv [batch, seq, width], got shape {tuple(qkv.shape)}")
    if not be.use_cuda(qkv) or not qkv.is_contiguous():
        _reference(qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride,
                   rot_half, position_offset, inverse)  # fmt: skip
        return
    _launch(qkv, qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
            position_offset, inverse)  # fmt: skip


@rotary_.register_fake
def _(qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
      position_offset, inverse):  # fmt: skip
    return None


@torch.library.custom_op("neox::rotary", mutates_args=(), schema=f"(Tensor qkv, {_ARGS}) -> Tensor")
def rotary(qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
           position_offset, inverse):  # fmt: skip
    """A rotated copy of qkv: one pass that reads each element once and writes it once (the
    backward's, where the incoming gradient must not be changed; a clone followed by the
    in-place op would move the rotated channels twice)."""
    if qkv.dim() != 3:
        raise ValueError(f"rotary expects qkv [batch, seq, width], got shape {tuple(qkv.shape)}")
    if not be.use_cuda(qkv):
        out = qkv.clone(memory_format=torch.contiguous_format)
        _reference(out, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride,
                   rot_half, position_offset, inverse)  # fmt: skip
        return out
    qkv = qkv.contiguous()
    out = torch.empty_like(qkv)
    _launch(qkv, out, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
            position_offset, inverse)  # fmt: skip
    return out


@rotary.register_fake
def _(qkv, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
      position_offset, inverse):  # fmt: skip
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _launch(src, dst, inv_freq, num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
            position_offset, inverse):  # fmt: skip
    b, s, width = src.shape
    be.cuda_extension().rotary(
        be.device_index(src), be.dtype_code(src), be.ptr(src), be.ptr(dst), b * s, s, width,
        num_q, q_offset, q_stride, num_k, k_offset, k_stride, rot_half,
        be.ptr(inv_freq.float().contiguous()), position_offset, inverse, be.stream(src),
    )  # fmt: skip


def _layout(num_heads: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
    if num_kv_heads == num_heads:  # per head [q; k; v]
        return num_heads, 0, 3 * head_dim, num_heads, head_dim, 3 * head_dim
    return num_heads, 0, head_dim, num_kv_heads, num_heads * head_dim, head_dim


class _RotaryInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, inv_freq, layout, position_offset):
        ctx.args = (layout, position_offset)
        ctx.save_for_backward(inv_freq)
        rotary_(qkv, inv_freq, *layout, inv_freq.numel(), position_offset, False)
        ctx.mark_dirty(qkv)
        return qkv

    @staticmethod
    def backward(ctx, grad):
        (inv_freq,) = ctx.saved_tensors
        layout, position_offset = ctx.args
        return _rotate_back(grad, inv_freq, layout, position_offset), None, None, None


def _rotate_back(grad: Tensor, inv_freq: Tensor, layout: tuple[int, ...], position_offset: int):
    """The inverse rotation of grad into a new tensor (autograd may hand the same gradient to
    other consumers); the rotation is orthogonal, so its transpose rotates by -angle."""
    args = (inv_freq, *layout, inv_freq.numel(), position_offset, True)
    if torch.compiler.is_compiling():
        # In a compiled layer the incoming gradient is made in the same graph (the
        # concatenation of q, k and v's gradients): the clone fuses into the kernel that
        # makes it, and inductor runs the rotation in place on that buffer, moving only the
        # rotated channels. H100, Pythia-410M (rotary 0.25): the copy kernel took 98 us a
        # layer, the in-place forward kernel 41; the step 96.8-96.9 -> 95.6-95.9 ms (2026-12-06)
        # Rotating in plain tensor code instead, for inductor to fuse into the kernel that
        # assembles the gradient, gained nothing: 95.0 against 94.0 ms per step (cos and sin
        # computed in the graph) and 98.8 / 96.4 against 96.3 / 96.8 (read from a table), same
        # H100 and call each (2026-12-06).
        out = grad.clone(memory_format=torch.contiguous_format)
        rotary_(out, *args)
        return out
    return rotary(grad, *args)


def _plan(
    qkv: Tensor, num_heads: int, num_kv_heads: int, rotary_dim: int, base: float
) -> tuple[Tensor, tuple[int, ...]] | None:
    """(inv_freq, layout) of the rotation, None when nothing rotates (rotary_dim 0), or a
    ValueError naming what does not fit."""
    if qkv.dim() != 3:
        raise ValueError(f"qkv must be [batch, seq, width], got shape {tuple(qkv.shape)}")
    width = qkv.shape[-1]
    head_dim = width // (num_heads + 2 * num_kv_heads)
    if head_dim * (num_heads + 2 * num_kv_heads) != width:
        raise ValueError(
            f"qkv width {width} does not split into {num_heads}+2x{num_kv_heads} heads"
        )
    if rotary_dim % 2 or not 0 <= rotary_dim <= head_dim:
        raise ValueError(f"rotary_dim {rotary_dim} must be even and at most head_dim {head_dim}")
    if rotary_dim == 0:
        return None
    return inv_frequencies(rotary_dim, base, qkv.device), _layout(num_heads, num_kv_heads, head_dim)


def rotary_qkv_(
    qkv: Tensor,
    num_heads: int,
    num_kv_heads: int,
    rotary_dim: int,
    base: float,
    position_offset: int = 0,
) -> Tensor:
    """Rotate the query and key heads of qkv [batch, seq, width] in place; returns qkv.

    Differentiable: the backward applies the inverse rotation to the incoming gradient.
    """
    plan = _plan(qkv, num_heads, num_kv_heads, rotary_dim, base)
    if plan is None:
        return qkv
    inv_freq, layout = plan
    if torch.is_grad_enabled() and qkv.requires_grad:
        return _RotaryInPlace.apply(qkv, inv_freq, layout, position_offset)
    rotary_(qkv, inv_freq, *layout, rotary_dim // 2, position_offset, False)
    return qkv


def rotary_qkv_grad(
    grad: Tensor,
    num_heads: int,
    num_kv_heads: int,
    rotary_dim: int,
    base: float,
    position_offset: int = 0,
) -> Tensor:
    """The gradient of `rotary_qkv_`'s input given that of its output, in a new tensor: what
    its autograd backward computes, for callers that run their own backward (the kernel
    benchmark times the op this way, without autograd's copy of a leaf input)."""
    plan = _plan(grad, num_heads, num_kv_heads, rotary_dim, base)
    if plan is None:
        return grad.clone()
    return _rotate_back(grad, *plan, position_offset)
