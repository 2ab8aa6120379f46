"""Compare each op's compiled kernel with its reference on random inputs.

The same case runs twice: on the given device and dtype (the CUDA kernel where built) and on
the same device in fp64 (always the PyTorch reference). Forward outputs and input gradients
are compared by ||out - ref|| / ||ref||. Used by `neox-kernels self-check` and the gpu tests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from neox_kernels import ops

# ||out - ref|| / ||ref|| allowed per dtype: fp32 arithmetic lands far below 1e-4; bf16 and fp16
# carry 8 and 11 bits of mantissa, and each output is rounded once (twice through a backward).
# fp16's bound is set by the cross-entropy: its gradient logits (softmax / tokens, ~1e-9) fall
# under fp16's smallest subnormal, as they do in torch's own fp16 cross-entropy (measured 8e-3).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[torch.Generator, torch.device], list[Tensor]]  # fp32 inputs
    run: Callable[..., list[Tensor]]  # differentiable inputs first; returns outputs
    grads: int  # how many leading inputs get gradients


def _randn(gen, device, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, device=device) * scale


def norm_case(kind: str, rows: int, hidden: int, residual: bool, affine: bool) -> Case:
    fn = ops.rms_norm if kind == "rms" else ops.layer_norm

    def build(gen, device):
        x = _randn(gen, device, rows, hidden) + 0.5
        ins = [x]
        if residual:
            ins.append(_randn(gen, device, rows, hidden))
        if affine:
            ins += [1 + 0.1 * _randn(gen, device, hidden), 0.1 * _randn(gen, device, hidden)]
        return ins

    def run(*ins):
        x, rest = ins[0], list(ins[1:])
        res = rest.pop(0) if residual else None
        w, b = (rest[0], rest[1]) if affine else (None, None)
        out = fn(x, w, b, 1e-5, residual=res)
        return list(out) if residual else [out]

    n = 1 + residual + 2 * affine
    flags = ("+res" if residual else "") + ("+affine" if affine else "")
    return Case(f"{kind}norm {rows}x{hidden}{flags}", build, run, n)


def swiglu_case(rows: int, inner: int) -> Case:
    return Case(
        f"swiglu {rows}x{inner}",
        lambda gen, device: [_randn(gen, device, rows, 2 * inner, scale=2.0)],
        lambda h: [ops.swiglu(h)],
        1,
    )


def gelu_case(rows: int, cols: int, approximate: bool) -> Case:
    return Case(
        f"bias_gelu{'_tanh' if approximate else ''} {rows}x{cols}",
        lambda gen, device: [
            _randn(gen, device, rows, cols, scale=2.0),
            _randn(gen, device, cols, scale=0.5),
        ],
        lambda x, b: [ops.bias_gelu(x, b, approximate)],
        2,
    )


def rotary_case(batch: int, seq: int, heads: int, kv_heads: int, head_dim: int, pct: float,
                base: float = 10000.0) -> Case:  # fmt: skip
    width = (heads + 2 * kv_heads) * head_dim
    rot = int(head_dim * pct) // 2 * 2

    def run(qkv):
        out = qkv * 1  # a non-leaf the op may rotate in place
        return [ops.rotary_qkv_(out, heads, kv_heads, rot, base)]

    return Case(
        f"rotary b{batch} s{seq} h{heads}/{kv_heads} d{head_dim} rot{rot}",
        lambda gen, device: [_randn(gen, device, batch, seq, width)],
        run,
        1,
    )


def cross_entropy_case(tokens: int, hidden: int, vocab: int, z_loss: float = 0.0,
                       shards: int = 1, chunk_rows: int | None = None,
                       torch_eager: bool = False, weight_grad: str = "auto") -> Case:  # fmt: skip
    """The fused op (one device or `shards` vocabulary shards; `weight_grad` its weight
    gradient's route); with `torch_eager`, torch's own F.linear + cross_entropy on the same
    inputs: the baseline a kernel's error in a low-precision dtype is judged against (fp16
    gradient logits lose digits either way)."""

    def build(gen, device):
        labels = torch.randint(0, vocab, (tokens,), generator=gen, device=device)
        ignore = torch.rand(tokens, generator=gen, device=device) < 0.1
        labels = torch.where(ignore, torch.full_like(labels, -100), labels)
        return [
            _randn(gen, device, tokens, hidden),
            _randn(gen, device, vocab, hidden, scale=1 / math.sqrt(hidden)),
            labels.float(),  # carried as float so the harness can cast; made int64 in run
        ]

    def run(h, w, labels):
        labels = labels.long()
        if torch_eager:
            logits = torch.nn.functional.linear(h, w).float()
            valid = labels != -100
            lse = torch.logsumexp(logits, -1)
            ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
            return [ce + z_loss * (lse * lse * valid).sum() / valid.sum().clamp(min=1)]
        if shards == 1:
            return [ops.linear_cross_entropy(h, w, labels, z_loss=z_loss, chunk_rows=chunk_rows,
                                             weight_grad=weight_grad)]  # fmt: skip
        bounds = [vocab * s // shards for s in range(shards + 1)]
        stats = [
            ops.linear_cross_entropy_shard(h, w[a:b], labels, a, chunk_rows=chunk_rows)
            for a, b in itertools.pairwise(bounds)
        ]
        lse = torch.logsumexp(torch.stack([s[0] for s in stats]), 0)
        target = sum(s[1] for s in stats)
        valid = labels != -100
        return [((lse - target) * valid).sum() / valid.sum().clamp(min=1), lse]

    name = f"linear_ce {tokens}x{hidden} V{vocab}" + (f" z{z_loss}" if z_loss else "")
    name += " torch eager" if torch_eager else ""
    name += f" {weight_grad}" if weight_grad != "auto" and not torch_eager else ""
    return Case(name + (f" {shards} shards" if shards > 1 else ""), build, run, 2)


def _evaluate(case: Case, inputs: list[Tensor], dtype: torch.dtype, seed: int):
    ins = [t.to(dtype) if i < case.grads else t for i, t in enumerate(inputs)]
    ins = [t.detach().requires_grad_(i < case.grads) for i, t in enumerate(ins)]
    outs = case.run(*ins)
    gen = torch.Generator(device=ins[0].device).manual_seed(seed + 1)
    cotangents = [torch.randn(o.shape, generator=gen, device=o.device).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, ins[: case.grads], cotangents, allow_unused=True)
    return [o.detach() for o in outs] + [g for g in grads if g is not None]


def relative_error(out: Tensor, ref: Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return math.inf
    return float((out - ref).norm() / ref.norm().clamp(min=1e-30))


def check(case: Case, device: torch.device, dtype: torch.dtype, seed: int = 0) -> float:
    """Worst relative error of the case's outputs and gradients against the fp64 reference.

    cuBLAS's reduced-precision fp16 reductions (torch's default) are switched off meanwhile:
    they put the fp16 matmuls of the cross-entropy 3e-2 off for some shapes, which measures
    cuBLAS, not these kernels.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    inputs = case.build(gen, device)
    matmul = torch.backends.cuda.matmul
    reduced = matmul.allow_fp16_reduced_precision_reduction
    matmul.allow_fp16_reduced_precision_reduction = False
    try:
        got = _evaluate(case, inputs, dtype, seed)
    finally:
        matmul.allow_fp16_reduced_precision_reduction = reduced
    ref = _evaluate(case, [t.double() if t.is_floating_point() else t for t in inputs],
                    torch.float64, seed)  # fmt: skip
    if len(got) != len(ref):
        raise AssertionError(f"{case.name}: {len(got)} results against {len(ref)} reference")
    return max(relative_error(g, r) for g, r in zip(got, ref, strict=True))


def quick_cases() -> list[Case]:
    """A few seconds on a GPU: every op once, awkward sizes included."""
    return [
        norm_case("rms", 300, 2048, residual=True, affine=True),
        norm_case("layer", 257, 1000, residual=False, affine=True),
        swiglu_case(300, 2731),
        gelu_case(300, 4096, approximate=True),
        gelu_case(77, 1001, approximate=False),
        rotary_case(2, 128, 8, 8, 64, 0.25),
        rotary_case(2, 64, 8, 2, 128, 1.0, base=500000.0),
        cross_entropy_case(257, 256, 50277, z_loss=1e-4, chunk_rows=100),
        cross_entropy_case(200, 128, 4096, shards=2, chunk_rows=64),
    ]
