"""RMSNorm and LayerNorm (optional weight/bias, optional fused residual add) as `neox::` ops.

`neox::norm_fwd` returns (out, residual_out, mean, rstd): residual_out = x + residual when a
residual is given (the residual stream, rounded to x's dtype, is what gets normalised), else
an empty tensor. Statistics are fp32. The reference and the kernel compute the same function:
y = (h - mean) * rstd * weight + bias with h in fp32, rounded once to x's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neox_kernels.ops import _backend as be

_FWD_SCHEMA = (
    "(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, float eps, bool rms)"
    " -> (Tensor, Tensor, Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor grad_out, Tensor? grad_residual_out, Tensor input, Tensor? weight, Tensor mean,"
    " Tensor rstd, bool rms, bool weight_grad, bool bias_grad) -> (Tensor, Tensor, Tensor)"
)


def _rows(x: Tensor) -> int:
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


def _reference_fwd(x, residual, weight, bias, eps, rms):
    h = x + residual if residual is not None else x
    h32 = be.acc(h)
    if rms:
        mean = torch.zeros(h.shape[:-1], dtype=be.stat_dtype(x), device=x.device)
        rstd = torch.rsqrt(h32.pow(2).mean(-1) + eps)
    else:
        mean = h32.mean(-1)
        rstd = torch.rsqrt((h32 - mean.unsqueeze(-1)).pow(2).mean(-1) + eps)
    y = (h32 - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    if weight is not None:
        y = y * be.acc(weight)
    if bias is not None:
        y = y + be.acc(bias)
    res_out = h.clone() if residual is not None else x.new_empty(0)
    return y.to(x.dtype), res_out, mean.reshape(-1), rstd.reshape(-1)


@torch.library.custom_op("neox::norm_fwd", mutates_args=(), schema=_FWD_SCHEMA)
def norm_fwd(x, residual, weight, bias, eps, rms):
    if not be.use_cuda(x):
        return _reference_fwd(x, residual, weight, bias, eps, rms)
    x = x.contiguous()
    residual = residual.contiguous() if residual is not None else None
    hidden, rows = x.shape[-1], _rows(x)
    out = torch.empty_like(x)
    res_out = torch.empty_like(x) if residual is not None else x.new_empty(0)
    mean = torch.empty(rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
    be.cuda_extension().norm_forward(
        be.device_index(x), be.dtype_code(x), rms, be.ptr(x), be.ptr(residual),
        be.ptr(None if weight is None else weight.contiguous()),
        be.ptr(None if bias is None else bias.contiguous()),
        be.ptr(out), be.ptr(res_out if residual is not None else None),
        be.ptr(mean), be.ptr(rstd), rows, hidden, float(eps), be.stream(x),
    )  # fmt: skip
    return out, res_out, mean, rstd


@norm_fwd.register_fake
def _(x, residual, weight, bias, eps, rms):
    rows = _rows(x)
    res_out = torch.empty_like(x) if residual is not None else x.new_empty(0)
    stat = x.new_empty(rows, dtype=be.stat_dtype(x))
    return torch.empty_like(x), res_out, stat, stat.clone()


def _reference_bwd(grad_out, grad_res, h, weight, mean, rstd, rms, weight_grad, bias_grad):
    hidden = h.shape[-1]
    h32 = be.acc(h).reshape(-1, hidden)
    g = be.acc(grad_out).reshape(-1, hidden)
    xhat = (h32 - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    wdy = g * be.acc(weight) if weight is not None else g
    c1 = (wdy * xhat).mean(-1, keepdim=True)
    c2 = torch.zeros_like(c1) if rms else wdy.mean(-1, keepdim=True)
    dx = rstd.unsqueeze(-1) * (wdy - c2 - xhat * c1)
    if grad_res is not None:
        dx = dx + be.acc(grad_res).reshape(-1, hidden)
    dw = (g * xhat).sum(0).to(h.dtype) if weight_grad else h.new_empty(0)
    db = g.sum(0).to(h.dtype) if bias_grad else h.new_empty(0)
    return dx.to(h.dtype).reshape(h.shape), dw, db


@torch.library.custom_op("neox::norm_bwd", mutates_args=(), schema=_BWD_SCHEMA)
def norm_bwd(grad_out, grad_residual_out, input, weight, mean, rstd, rms, weight_grad, bias_grad):
    if not be.use_cuda(input):
        return _reference_bwd(
            grad_out, grad_residual_out, input, weight, mean, rstd, rms, weight_grad, bias_grad
        )
    ext = be.cuda_extension()
    hidden, rows = input.shape[-1], _rows(input)
    grad_out = grad_out.contiguous()
    grad_res = grad_residual_out.contiguous() if grad_residual_out is not None else None
    dx = torch.empty_like(input)
    dw = input.new_empty(hidden if weight_grad else 0)
    db = input.new_empty(hidden if bias_grad else 0)
    if rows == 0:  # no kernel runs: sums over no rows are zeros
        return dx, dw.zero_(), db.zero_()
    dev, dtype, stream = be.device_index(input), be.dtype_code(input), be.stream(input)
    blocks = ext.norm_backward_blocks(dtype, rms, grad_res is not None, rows, hidden)
    fp32 = dict(dtype=torch.float32, device=input.device)
    pdw = torch.empty(blocks, hidden, **fp32) if weight_grad else None
    pdb = torch.empty(blocks, hidden, **fp32) if bias_grad else None
    ext.norm_backward(
        dev, dtype, rms, be.ptr(grad_out), be.ptr(grad_res), be.ptr(input.contiguous()),
        be.ptr(None if weight is None else weight.contiguous()), be.ptr(mean), be.ptr(rstd),
        be.ptr(dx), be.ptr(pdw), be.ptr(pdb), blocks, rows, hidden, stream,
    )  # fmt: skip
    if weight_grad or bias_grad:  # both sums, rounded to the input's dtype, in one launch
        ext.sum_partials(dev, dtype, be.ptr(pdw), be.ptr(dw), be.ptr(pdb), be.ptr(db), blocks,
                         hidden, stream)  # fmt: skip
    return dx, dw, db


@norm_bwd.register_fake
def _(grad_out, grad_residual_out, input, weight, mean, rstd, rms, weight_grad, bias_grad):
    hidden = input.shape[-1]
    dw = input.new_empty(hidden if weight_grad else 0)
    db = input.new_empty(hidden if bias_grad else 0)
    return torch.empty_like(input), dw, db


def _setup(ctx, inputs, output):
    x, residual, weight, bias, _eps, rms = inputs
    _out, res_out, mean, rstd = output
    # mean and rstd (and often one of out / res_out) get no gradient: without this autograd
    # would fill zeros for them on every backward (two fp32 [rows] fills, seen in the profile)
    ctx.set_materialize_grads(False)
    ctx.rms = rms
    ctx.has_residual = residual is not None
    ctx.has_bias = bias is not None
    ctx.weight_dtype = weight.dtype if weight is not None else None
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(res_out if residual is not None else x, weight, mean, rstd)


def _backward(ctx, grad_out, grad_res_out, _gm, _gr):
    h, weight, mean, rstd = ctx.saved_tensors
    weight_grad = weight is not None and ctx.needs_input_grad[2]
    bias_grad = ctx.has_bias and ctx.needs_input_grad[3]
    if grad_out is None:
        grad_out = torch.zeros_like(h)
    dx, dw, db = norm_bwd(
        grad_out, grad_res_out if ctx.has_residual else None, h, weight, mean, rstd,
        ctx.rms, weight_grad, bias_grad,
    )  # fmt: skip
    return (
        dx,
        dx if ctx.has_residual else None,
        dw.to(ctx.weight_dtype) if weight_grad else None,
        db.to(ctx.bias_dtype) if bias_grad else None,
        None,
        None,
    )


norm_fwd.register_autograd(_backward, setup_context=_setup)


def _norm(x, weight, bias, eps, residual, rms):
    cast = [t.to(x.dtype) if t is not None and t.dtype != x.dtype else t for t in (weight, bias)]
    if residual is not None and residual.dtype != x.dtype:
        raise ValueError(f"residual dtype {residual.dtype} differs from x dtype {x.dtype}")
    out, res_out, _, _ = norm_fwd(x, residual, cast[0], cast[1], float(eps), rms)
    return (out, res_out) if residual is not None else out


def rms_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    residual: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """x * rsqrt(mean(x^2) + eps) * weight + bias over the last dim (eps inside the root).

    With `residual`, normalises h = x + residual and returns (out, h).
    """
    return _norm(x, weight, bias, eps, residual, True)


def layer_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    residual: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """LayerNorm over the last dim (as `F.layer_norm`); with `residual`, returns (out, x + residual)."""
    return _norm(x, weight, bias, eps, residual, False)
