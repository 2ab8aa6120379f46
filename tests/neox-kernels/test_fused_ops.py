"""The fused ops' PyTorch references (what CPU machines and CI run) against torch's own ops.

Each `neox::` op runs here through its reference implementation; the semantics checked are
the ones the CUDA kernels are tested against on the GPU (test_fused_ops_gpu.py).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from neox_kernels import ops  # noqa: E402
from neox_kernels.ops import cross_entropy as ce_ops  # noqa: E402
from neox_kernels.ops import verify  # noqa: E402


def _grads(out, inputs, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cot = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    return torch.autograd.grad(out, inputs, cot)


def _leaf(*shape, dtype=torch.float64, scale=1.0):
    return (torch.randn(*shape, dtype=dtype) * scale).requires_grad_()


def _close(a, b, tol=1e-10):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_is_torch_layer_norm(affine) -> None:
    x, w, b = _leaf(5, 37), _leaf(37), _leaf(37)
    args = (w, b) if affine else (None, None)
    out = ops.layer_norm(x, *args, eps=1e-5)
    ref = F.layer_norm(x, (37,), *args, eps=1e-5)
    leaves = (x, w, b) if affine else (x,)
    _close([out, *_grads(out, leaves)], [ref, *_grads(ref, leaves)])


def test_rms_norm_with_residual_is_the_sum_normalised() -> None:
    x, r, w, b = _leaf(4, 3, 64), _leaf(4, 3, 64), _leaf(64), _leaf(64)
    out, h = ops.rms_norm(x, w, b, eps=1e-6, residual=r)
    s = x + r
    ref = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6) * w + b
    total, ref_total = out.sum() + h.pow(2).sum(), ref.sum() + s.pow(2).sum()
    _close([out, h], [ref, s])
    _close(torch.autograd.grad(total, (x, r, w, b)), torch.autograd.grad(ref_total, (x, r, w, b)))


@pytest.mark.parametrize("used", ["out", "h"])
def test_norm_with_residual_backpropagates_either_output_alone(used) -> None:
    """Only the used output carries a gradient; the statistics get none, and no zero
    gradients are made for them (the backward runs on what it is given)."""
    x, r, w = _leaf(4, 64), _leaf(4, 64), _leaf(64)
    out, h = ops.rms_norm(x, w, eps=1e-6, residual=r)
    s = x + r
    ref = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    loss, ref_loss = (out.sum(), ref.sum()) if used == "out" else (h.pow(2).sum(), s.pow(2).sum())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        grads = torch.autograd.grad(loss, (x, r, w), allow_unused=True)
    ref_grads = torch.autograd.grad(ref_loss, (x, r, w), allow_unused=True)
    for g, ref_g in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if ref_g is None else ref_g)
    # autograd materialises a missing output gradient with aten::zeros (three of them here:
    # mean, rstd and the unused output); the backward takes None instead
    assert "aten::zeros" not in {e.name for e in prof.events()}


def test_norm_of_fp16_rounds_once_from_fp32() -> None:
    """fp16 in and out, computed in fp32 and rounded once: within half an fp16 ulp (plus fp32
    round-off) of the exact norm. Not bit-equal to `F.layer_norm` on fp32: two fp32 formulas can
    differ in their last bits and so round to neighbouring fp16 values (1 of 800 did once)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 100, generator=gen).half()
    w = torch.rand(100, generator=gen).half()
    out = ops.layer_norm(x, w)
    assert out.dtype == torch.float16
    exact = F.layer_norm(x.double(), (100,), w.double())
    ulp = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(2.0**-14))) - 10)
    err = (out.double() - exact).abs()
    bound = 0.5 * ulp + 1e-6  # outputs are O(1): fp32 round-off is absolute, ~1e-7
    assert (err <= bound).all(), f"{(err / ulp).max():.3f} ulp off"
    # the bound has teeth: the same norm done in fp16 arithmetic breaks it
    mean = x.mean(-1, keepdim=True)
    in_fp16 = (x - mean) * torch.rsqrt((x - mean).pow(2).mean(-1, keepdim=True) + 1e-5) * w
    assert not ((in_fp16.double() - exact).abs() <= bound).all()


def test_swiglu_is_up_times_silu_gate() -> None:
    h = _leaf(3, 5, 2 * 11, scale=3.0)
    up, gate = h.chunk(2, dim=-1)
    ref = up * F.silu(gate)
    out = ops.swiglu(h)
    _close([out, *_grads(out, (h,))], [ref, *_grads(ref, (h,))])
    with pytest.raises(ValueError, match="even"):
        ops.swiglu(torch.randn(2, 5))


@pytest.mark.parametrize("approximate", [False, True])
def test_bias_gelu_is_gelu_of_the_sum(approximate) -> None:
    x, b = _leaf(6, 33, scale=3.0), _leaf(33)
    out = ops.bias_gelu(x, b, approximate=approximate)
    ref = F.gelu(x + b, approximate="tanh" if approximate else "none")
    _close([out, *_grads(out, (x, b))], [ref, *_grads(ref, (x, b))])


def _rotate_reference(qkv, heads, kv_heads, rot, base):
    """neox-core's out-of-place formula: split heads, rotate half of the first rot channels."""
    b, s, width = qkv.shape
    d = width // (heads + 2 * kv_heads)
    if heads == kv_heads:
        q, k, v = qkv.view(b, s, heads, 3 * d).split(d, dim=-1)
    else:
        q, k, v = qkv.split((heads * d, kv_heads * d, kv_heads * d), dim=-1)
        q, k, v = (t.reshape(b, s, -1, d) for t in (q, k, v))
    inv = 1.0 / (base ** (torch.arange(0, rot, 2).float() / rot))
    ang = torch.outer(torch.arange(s, dtype=torch.float32), inv).double()
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rot_fn(t):
        x, rest = t[..., :rot], t[..., rot:]
        x1, x2 = x.chunk(2, dim=-1)
        turned = torch.cat([-x2, x1], -1)
        return torch.cat([x * cos[:, None] + turned * sin[:, None], rest], -1)

    q, k = rot_fn(q), rot_fn(k)
    if heads == kv_heads:
        return torch.cat([q, k, v], -1).reshape(b, s, width)
    return torch.cat([q.reshape(b, s, -1), k.reshape(b, s, -1), v.reshape(b, s, -1)], -1)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim", "pct"), [(4, 4, 16, 0.25), (4, 4, 8, 1.0), (6, 2, 12, 1.0)]
)
def test_rotary_in_place_matches_the_split_head_formula(heads, kv_heads, head_dim, pct) -> None:
    rot = int(head_dim * pct)
    qkv = _leaf(2, 9, (heads + 2 * kv_heads) * head_dim)
    work = qkv * 1
    out = ops.rotary_qkv_(work, heads, kv_heads, rot, 10000.0)
    assert out.data_ptr() == work.data_ptr(), "not in place"
    ref = _rotate_reference(qkv, heads, kv_heads, rot, 10000.0)
    _close([out, *_grads(out, (qkv,))], [ref, *_grads(ref, (qkv,))])


@pytest.mark.parametrize(("heads", "kv_heads", "rot"), [(4, 4, 4), (6, 2, 12), (4, 4, 0)])
def test_rotary_grad_is_what_autograd_computes(heads, kv_heads, rot) -> None:
    """rotary_qkv_grad (the backward as a function) against autograd through the formula."""
    qkv = _leaf(2, 9, (heads + 2 * kv_heads) * 12)
    grad = torch.randn_like(qkv)
    kept = grad.clone()
    ref = _rotate_reference(qkv, heads, kv_heads, rot, 10000.0)
    (want,) = torch.autograd.grad(ref, qkv, grad)
    got = ops.rotary_qkv_grad(grad, heads, kv_heads, rot, 10000.0)
    torch.testing.assert_close(got, want)
    assert torch.equal(grad, kept) and got.data_ptr() != grad.data_ptr()


def test_rotary_rejects_a_width_that_is_not_heads() -> None:
    with pytest.raises(ValueError, match="does not split"):
        ops.rotary_qkv_(torch.randn(1, 2, 50), 4, 4, 4, 10000.0)


@pytest.mark.parametrize("weight_grad", ["accumulate", "recompute"])
@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_linear_cross_entropy_is_cross_entropy_of_the_logits(z_loss, chunk_rows, weight_grad) -> None:  # fmt: skip
    hidden, weight = _leaf(2, 11, 16), _leaf(97, 16, scale=0.3)
    labels = torch.randint(0, 97, (2, 11))
    labels[0, :3] = -100
    out = ops.linear_cross_entropy(hidden, weight, labels, z_loss=z_loss, chunk_rows=chunk_rows,
                                   weight_grad=weight_grad)  # fmt: skip
    logits = hidden @ weight.T
    valid = labels != -100
    lse = torch.logsumexp(logits, -1)
    ref = (
        F.cross_entropy(logits.reshape(-1, 97), labels.reshape(-1))
        + z_loss * (lse.pow(2) * valid).sum() / valid.sum()
    )
    _close([out, *_grads(out, (hidden, weight))], [ref, *_grads(ref, (hidden, weight))])


@pytest.mark.parametrize("weight_grad", ["accumulate", "recompute"])
@pytest.mark.parametrize("trained", ["hidden", "weight"])
def test_linear_cross_entropy_with_one_input_frozen(weight_grad, trained) -> None:
    """A frozen weight (the recompute route then has no weight gradient to remake) or a frozen
    hidden: the other input's gradient is still that of the logits, on either route."""
    hidden, weight = _leaf(3, 5, 16), _leaf(97, 16, scale=0.3)
    labels = torch.randint(0, 97, (3, 5))
    frozen = weight if trained == "hidden" else hidden
    frozen.requires_grad_(False)
    live = hidden if trained == "hidden" else weight
    out = ops.linear_cross_entropy(hidden, weight, labels, chunk_rows=4, weight_grad=weight_grad)
    ref = F.cross_entropy((hidden @ weight.T).reshape(-1, 97), labels.reshape(-1))
    _close([out, *_grads(out, (live,))], [ref, *_grads(ref, (live,))])


def test_linear_cross_entropy_sum_and_all_ignored() -> None:
    hidden, weight = _leaf(5, 8), _leaf(13, 8)
    labels = torch.tensor([1, 2, -100, 4, 12])
    out = ops.linear_cross_entropy(hidden, weight, labels, reduction="sum")
    ref = F.cross_entropy(hidden @ weight.T, labels, reduction="sum")
    _close([out], [ref])
    none = ops.linear_cross_entropy(hidden, weight, torch.full((5,), -100))
    assert none.item() == 0.0
    (g,) = torch.autograd.grad(none, hidden)
    assert torch.count_nonzero(g) == 0


def test_vocab_shards_combine_to_the_full_loss() -> None:
    case = verify.cross_entropy_case(40, 8, 50, shards=3, chunk_rows=9)
    full = verify.cross_entropy_case(40, 8, 50, chunk_rows=9)
    gen = torch.Generator().manual_seed(3)
    inputs = [t.double() for t in case.build(gen, torch.device("cpu"))]
    h, w = (t.requires_grad_() for t in inputs[:2])
    sharded, _ = case.run(h, w, inputs[2])
    (whole,) = full.run(h, w, inputs[2])
    _close([sharded, *torch.autograd.grad(sharded, (h, w))], [whole, *torch.autograd.grad(whole, (h, w))])  # fmt: skip


@pytest.mark.parametrize("chunk_cols", [1, 7, 96, 97, 1000])
def test_recomputed_weight_gradient_is_that_of_the_logits(chunk_cols) -> None:
    """The recompute route's op, over vocabulary chunks of any width (the last one short),
    scaled by the loss's gradient, and in the weight's dtype when that differs (autocast)."""
    hidden, labels = _leaf(23, 16), torch.randint(0, 97, (23,))
    labels[:4] = -100
    weight = _leaf(97, 16, scale=0.3)
    row_weight = (labels != -100).double() / 19
    z_loss, factor = 1e-3, torch.tensor(2.5, dtype=torch.float64)
    logits = hidden @ weight.T
    lse = torch.logsumexp(logits, -1)
    picked = logits.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
    loss = (row_weight * (lse - picked + z_loss * lse * lse)).sum() * factor
    (ref,) = torch.autograd.grad(loss, weight)
    out = torch.ops.neox.linear_cross_entropy_weight_grad(
        hidden.detach(), weight.detach(), labels, lse.detach(), row_weight, z_loss, factor,
        chunk_cols,
    )  # fmt: skip
    _close([out], [ref])
    mixed = torch.ops.neox.linear_cross_entropy_weight_grad(
        hidden.detach().float(), weight.detach(), labels, lse.detach().float(), row_weight,
        z_loss, factor, chunk_cols,
    )  # fmt: skip
    assert mixed.dtype == torch.float64
    assert torch.allclose(mixed, ref, rtol=1e-4, atol=1e-6)
    # fp16 scales after each matmul (gradient logits of softmax / tokens would underflow)
    half = torch.ops.neox.linear_cross_entropy_weight_grad(
        hidden.detach().half(), weight.detach().half(), labels, lse.detach().float(),
        row_weight, z_loss, factor, chunk_cols,
    )  # fmt: skip
    assert half.dtype == torch.float16
    assert (half.double() - ref).norm() / ref.norm() < 1e-2


def test_accumulated_weight_gradient_is_scaled_in_row_blocks(monkeypatch) -> None:
    """The accumulate route's final (fp32 sum * loss grad).to(weight dtype), block by block."""
    monkeypatch.setattr(ce_ops, "_WEIGHT_GRAD_CHUNK_BYTES", 3 * 16 * 4)  # 3 rows of fp32
    hidden, weight = _leaf(9, 16, dtype=torch.float32), _leaf(41, 16, dtype=torch.float32)
    labels = torch.randint(0, 41, (9,))
    out = ops.linear_cross_entropy(hidden, weight, labels, weight_grad="accumulate") * 3.0
    ref = F.cross_entropy(hidden @ weight.T, labels) * 3.0
    _close(_grads(out, (weight,)), _grads(ref, (weight,)), tol=1e-5)


def test_fp32_weight_under_autocast_gets_the_accumulated_sum_as_its_gradient() -> None:
    """neox-train's regime (fp32 master weight, bf16 autocast): the accumulate route hands its
    fp32 sum on as the gradient, scaled in place, so a second backward is refused by name."""
    hidden = _leaf(13, 16, dtype=torch.float32)
    weight = _leaf(41, 16, dtype=torch.float32, scale=0.3)
    labels = torch.randint(0, 41, (13,))
    labels[2] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.linear_cross_entropy(hidden, weight, labels, weight_grad="accumulate") * 2.5
    out.backward(retain_graph=True)
    h16, w16 = (t.detach().bfloat16().float().requires_grad_() for t in (hidden, weight))
    ref = F.cross_entropy(h16 @ w16.T, labels) * 2.5
    ref.backward()
    assert weight.grad.dtype == torch.float32
    torch.testing.assert_close(weight.grad, w16.grad, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(hidden.grad, h16.grad, rtol=2e-2, atol=1e-3)
    with pytest.raises(RuntimeError, match="weight_grad='recompute'"):
        out.backward()


def test_weight_gradient_routes_are_checked_and_chunks_bounded() -> None:
    with pytest.raises(ValueError, match="weight_grad"):
        ops.linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4).long(), weight_grad="fast")  # fmt: skip
    cols = ce_ops.weight_grad_chunk_cols(8192, 128256, torch.bfloat16)
    assert cols % 256 == 0 and 8192 * cols * 2 <= 32 * 2**20
    assert ce_ops.weight_grad_chunk_cols(10**6, 50304, torch.float32) == 256
    assert ce_ops.weight_grad_chunk_cols(3, 50, torch.float32) == 50


def test_bad_shapes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="labels must be"):
        ops.linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(5).long())
    with pytest.raises(ValueError, match="reduction"):
        ops.linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4).long(), reduction="max")  # fmt: skip


def test_chunks_hold_a_bounded_share_of_the_logits() -> None:
    rows = ce_ops.default_chunk_rows(128256, torch.bfloat16)
    assert rows * 128256 * 2 <= 128 * 2**20
    rows = ce_ops.default_chunk_rows(50304, torch.bfloat16, ce_ops.ACCUMULATE_CHUNK_BYTES)
    assert 512 * 2**20 - 50304 * 2 < rows * 50304 * 2 <= 512 * 2**20
    assert ce_ops.default_chunk_rows(10**9, torch.float32) == 64


OPCHECK_ARGS = {
    "norm_fwd": lambda: (_leaf(3, 8), _leaf(3, 8), _leaf(8), None, 1e-5, True),
    "norm_bwd": lambda: (
        torch.randn(3, 8, dtype=torch.float64), None, torch.randn(3, 8, dtype=torch.float64),
        torch.randn(8, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
        torch.ones(3, dtype=torch.float64), False, True, False,
    ),
    "swiglu_fwd": lambda: (_leaf(3, 8),),
    "swiglu_bwd": lambda: (torch.randn(3, 4), torch.randn(3, 8)),
    "bias_gelu_fwd": lambda: (_leaf(3, 8), _leaf(8), True),
    "bias_gelu_bwd": lambda: (torch.randn(3, 8), torch.randn(3, 8), torch.randn(8), False, True),
    "rotary_": lambda: (torch.randn(2, 3, 24), torch.rand(2), 2, 0, 12, 2, 4, 12, 2, 0, False),
    "rotary": lambda: (torch.randn(2, 3, 24), torch.rand(2), 2, 0, 12, 2, 4, 12, 2, 0, True),
    "linear_cross_entropy": lambda: (
        _leaf(6, 4), _leaf(9, 4), torch.tensor([1, 2, 3, -100, 8, 0]),
        torch.full((6,), 0.2, dtype=torch.float64), 1e-3, 4, True, False,
    ),
    # the accumulate route (weight gradient made in the forward), its weight of another dtype
    "linear_cross_entropy accumulate": lambda: (
        _leaf(6, 4), _leaf(9, 4, dtype=torch.float32), torch.tensor([1, 2, 3, -100, 8, 0]),
        torch.full((6,), 0.2, dtype=torch.float64), 0.0, 4, True, True,
    ),
    "linear_cross_entropy_weight_grad": lambda: (
        torch.randn(6, 4), torch.randn(9, 4), torch.tensor([1, 2, 3, -100, 8, 0]), torch.rand(6) + 3,
        torch.full((6,), 0.2), 1e-3, torch.tensor(1.5), 4,
    ),
    "linear_cross_entropy_stats": lambda: (_leaf(6, 4), _leaf(9, 4), torch.arange(6) + 3, 4, 4),
    "linear_cross_entropy_stats_bwd": lambda: (
        torch.randn(6, 4), torch.randn(9, 4), torch.arange(6), 0, torch.rand(6) + 3,
        torch.rand(6), -torch.rand(6), 5,
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(OPCHECK_ARGS))
def test_op_registration_is_consistent(case) -> None:
    """Schema, fake (meta) implementation and autograd registration agree with the op."""
    op = getattr(torch.ops.neox, case.split()[0]).default
    torch.library.opcheck(op, OPCHECK_ARGS[case]())


def test_every_op_has_an_opcheck_case() -> None:
    assert set(ops.OPS) <= {case.split()[0] for case in OPCHECK_ARGS}


@pytest.mark.slow
def test_self_check_cases_pass_on_cpu() -> None:
    """verify.check compares an op in fp32 with itself in fp64: on CPU both are references."""
    for case in verify.quick_cases()[:7]:
        assert verify.check(case, torch.device("cpu"), torch.float32) < 1e-4, case.name


@pytest.mark.slow
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2)])
def test_compiled_rotary_backward_rotates_the_fresh_gradient_in_place(heads, kv_heads) -> None:
    """In a compiled graph the backward of the rotary runs the in-place op on the buffer that
    gathers q, k and v's gradients (no second full copy), with eager's gradients."""
    from torch._inductor.utils import run_and_get_code

    d, b, s = 16, 2, 8
    x, w = (
        _leaf(b, s, 32, dtype=torch.float32),
        _leaf((heads + 2 * kv_heads) * d, 32, dtype=torch.float32),
    )

    def f(x, w):
        mixed = ops.rotary_qkv_(x @ w.t(), heads, kv_heads, 8, 10000.0)
        if heads == kv_heads:  # per head [q; k; v], as neox-core's Attention splits it
            q, k, v = mixed.view(b, s, heads, 3 * d).split(d, dim=-1)
        else:  # all q heads, then all k heads, then all v heads
            q, k, v = mixed.split((heads * d, kv_heads * d, kv_heads * d), dim=-1)
            q, k, v = q.view(b, s, heads, d), k.view(b, s, kv_heads, d), v.view(b, s, kv_heads, d)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != kv_heads)
        return (y * y).sum()

    want = torch.autograd.grad(f(x, w), (x, w))
    compiled = torch.compile(f, fullgraph=True)
    got, code = run_and_get_code(lambda: torch.autograd.grad(compiled(x, w), (x, w)))
    _close(got, want, tol=1e-5)
    calls = [line.strip() for line in code[-1].splitlines() if "torch.ops.neox.rotary" in line]
    # the backward's one rotation: the in-place op with inverse=True (its last argument)
    assert len(calls) == 1 and calls[0].startswith("torch.ops.neox.rotary_.default("), calls
    assert calls[0].endswith("True)"), calls


@pytest.mark.slow
def test_torch_compile_fullgraph_on_cpu() -> None:
    def f(x, w, head, labels):
        h, _ = ops.rms_norm(x, w, residual=x)
        return ops.linear_cross_entropy(ops.bias_gelu(h, None, True), head, labels)

    args = (_leaf(6, 8, dtype=torch.float32), _leaf(8, dtype=torch.float32),
            _leaf(11, 8, dtype=torch.float32), torch.arange(6))  # fmt: skip
    loss = torch.compile(f, fullgraph=True)(*args)
    assert math.isclose(loss.item(), f(*args).item(), rel_tol=1e-5)
