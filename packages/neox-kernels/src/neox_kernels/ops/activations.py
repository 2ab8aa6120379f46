"""SwiGLU and bias-GeLU as `neox::` ops (forward, backward, fake, autograd).

swiglu(h): h = [up; gate] along the last dim (GPT-NeoX's order), out = up * silu(gate).
bias_gelu(x, bias): gelu(x + bias), exact (erf) or GPT-NeoX's tanh approximation.
Both compute in fp32 and round once to the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from neox_kernels.ops import _backend as be


def _rows(x: Tensor) -> int:
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


@torch.library.custom_op("neox::swiglu_fwd", mutates_args=(), schema="(Tensor h) -> Tensor")
def swiglu_fwd(h):
    if h.shape[-1] % 2:
        raise ValueError(f"swiglu needs an even last dim, got {h.shape[-1]}")
    if not be.use_cuda(h):
        up, gate = be.acc(h).chunk(2, dim=-1)
        return (up * F.silu(gate)).to(h.dtype)
    h = h.contiguous()
    inner = h.shape[-1] // 2
    out = h.new_empty(*h.shape[:-1], inner)
    be.cuda_extension().swiglu_forward(
        be.device_index(h), be.dtype_code(h), be.ptr(h), be.ptr(out), _rows(h), inner, be.stream(h)
    )
    return out


@swiglu_fwd.register_fake
def _(h):
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


@torch.library.custom_op(
    "neox::swiglu_bwd", mutates_args=(), schema="(Tensor grad_out, Tensor h) -> Tensor"
)
def swiglu_bwd(grad_out, h):
    if not be.use_cuda(h):
        up, gate = be.acc(h).chunk(2, dim=-1)
        g = be.acc(grad_out)
        sig = torch.sigmoid(gate)
        d_up = g * gate * sig
        d_gate = g * up * sig * (1 + gate * (1 - sig))
        return torch.cat((d_up, d_gate), dim=-1).to(h.dtype)
    h, grad_out = h.contiguous(), grad_out.contiguous()
    dh = torch.empty_like(h)
    be.cuda_extension().swiglu_backward(
        be.device_index(h), be.dtype_code(h), be.ptr(grad_out), be.ptr(h), be.ptr(dh), _rows(h),
        h.shape[-1] // 2, be.stream(h),
    )  # fmt: skip
    return dh


@swiglu_bwd.register_fake
def _(grad_out, h):
    return torch.empty_like(h)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _swiglu_backward(ctx, grad_out):
    (h,) = ctx.saved_tensors
    return swiglu_bwd(grad_out, h)


swiglu_fwd.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)


def _gelu_ref(v: Tensor, approximate: bool) -> Tensor:
    return F.gelu(v, approximate="tanh" if approximate else "none")


def _gelu_grad_ref(v: Tensor, approximate: bool) -> Tensor:
    if approximate:
        k = math.sqrt(2 / math.pi)
        t = torch.tanh(k * (v + 0.044715 * v**3))
        return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * 0.044715 * v * v)
    return 0.5 * (1 + torch.erf(v / math.sqrt(2))) + v * torch.exp(-0.5 * v * v) / math.sqrt(
        2 * math.pi
    )


@torch.library.custom_op(
    "neox::bias_gelu_fwd",
    mutates_args=(),
    schema="(Tensor x, Tensor? bias, bool approximate) -> Tensor",
)
def bias_gelu_fwd(x, bias, approximate):
    if not be.use_cuda(x):
        v = be.acc(x) + be.acc(bias) if bias is not None else be.acc(x)
        return _gelu_ref(v, approximate).to(x.dtype)
    x = x.contiguous()
    out = torch.empty_like(x)
    be.cuda_extension().bias_gelu_forward(
        be.device_index(x), be.dtype_code(x), be.ptr(x),
        be.ptr(None if bias is None else bias.contiguous()), be.ptr(out), _rows(x), x.shape[-1],
        approximate, be.stream(x),
    )  # fmt: skip
    return out


@bias_gelu_fwd.register_fake
def _(x, bias, approximate):
    return torch.empty_like(x)


@torch.library.custom_op(
    "neox::bias_gelu_bwd",
    mutates_args=(),
    schema="(Tensor grad_out, Tensor x, Tensor? bias, bool approximate, bool bias_grad)"
    " -> (Tensor, Tensor)",
)
def bias_gelu_bwd(grad_out, x, bias, approximate, bias_grad):
    """(grad of x, grad of bias in x's dtype or an empty tensor): the CUDA kernel sums the
    bias gradient's columns as it writes grad x, instead of a second pass over it."""
    if not be.use_cuda(x):
        v = be.acc(x) + be.acc(bias) if bias is not None else be.acc(x)
        dx = (be.acc(grad_out) * _gelu_grad_ref(v, approximate)).to(x.dtype)
        stat = be.stat_dtype(x)
        db = dx.reshape(-1, x.shape[-1]).sum(0, dtype=stat).to(x.dtype) if bias_grad else x.new_empty(0)  # fmt: skip
        return dx, db
    x, grad_out = x.contiguous(), grad_out.contiguous()
    bias = None if bias is None else bias.contiguous()
    dx = torch.empty_like(x)
    ext, dev, dtype = be.cuda_extension(), be.device_index(x), be.dtype_code(x)
    rows, cols = _rows(x), x.shape[-1]
    pdb = None
    if bias_grad:
        parts = ext.bias_gelu_backward_partials(dev, dtype, be.ptr(grad_out), be.ptr(x),
                                                be.ptr(bias), be.ptr(dx), rows, cols)  # fmt: skip
        pdb = torch.empty(parts, cols, dtype=torch.float32, device=x.device)
    ext.bias_gelu_backward(
        dev, dtype, be.ptr(grad_out), be.ptr(x), be.ptr(bias), be.ptr(dx), be.ptr(pdb),
        0 if pdb is None else pdb.shape[0], rows, cols, approximate, be.stream(x),
    )  # fmt: skip
    db = x.new_empty(cols if pdb is not None else 0)
    if pdb is not None and pdb.shape[0] == 0:  # no rows: the sums are zeros
        db.zero_()
    elif pdb is not None:  # the column sums, rounded to x's dtype, in one launch
        ext.sum_partials(dev, dtype, be.ptr(pdb), be.ptr(db), 0, 0, pdb.shape[0], cols,
                         be.stream(x))  # fmt: skip
    return dx, db


@bias_gelu_bwd.register_fake
def _(grad_out, x, bias, approximate, bias_grad):
    return torch.empty_like(x), x.new_empty(x.shape[-1] if bias_grad else 0)


def _gelu_setup(ctx, inputs, output):
    x, bias, approximate = inputs
    ctx.approximate = approximate
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, bias)


def _gelu_backward(ctx, grad_out):
    x, bias = ctx.saved_tensors
    bias_grad = bias is not None and ctx.needs_input_grad[1]
    dx, db = bias_gelu_bwd(grad_out, x, bias, ctx.approximate, bias_grad)
    return dx, db.to(ctx.bias_dtype) if bias_grad else None, None


bias_gelu_fwd.register_autograd(_gelu_backward, setup_context=_gelu_setup)


def swiglu(h: Tensor) -> Tensor:
    """up * silu(gate) for h = [up; gate] along the last dim."""
    return swiglu_fwd(h)


def bias_gelu(x: Tensor, bias: Tensor | None = None, approximate: bool = False) -> Tensor:
    """gelu(x + bias); `approximate=True` is the tanh form (GPT-NeoX's `bias_gelu_fusion`)."""
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    return bias_gelu_fwd(x, bias, approximate)
