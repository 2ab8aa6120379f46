"""Choosing the attention kernel where FlashAttention-4 cannot run (CPU): the request decides.

The GPU side (FA4's numerics, the timed choice) is tests/neox-core/models/test_flash_attention4.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neox_core.distributed.attention_backend import (
    AttentionShape,
    choose_attention,
    set_attention_kernel,
)
from neox_core.models import build_model
from neox_core.models.layers import Attention

SHAPE = AttentionShape(batch=2, heads=4, kv_heads=2, seq=32, head_dim=16)
CPU = torch.device("cpu")


def test_auto_and_sdpa_keep_sdpa_on_cpu() -> None:
    for request in ("auto", "sdpa"):
        choice = choose_attention(request, CPU, "bf16", SHAPE)
        assert (choice.kernel, choice.sdpa_backends) == ("sdpa", [])
        assert choice.line == "PyTorch's default scaled_dot_product_attention (CPU)"


def test_fa4_where_it_cannot_run_is_an_error_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"attention_kernel = 'fa4': .*CUDA GPUs only"):
        choose_attention("fa4", CPU, "bf16", SHAPE)
    with pytest.raises(ValueError, match=r"attention_kernel = 'fa4': .*bf16/fp16.*fp32"):
        choose_attention("fa4", CPU, "fp32", SHAPE)
    with pytest.raises(ValueError, match=r"attention_kernel = 'flash'"):
        choose_attention("flash", CPU, "bf16", SHAPE)


def test_fa4_takes_only_the_head_dims_its_gpu_tests_passed() -> None:
    """d80 (Pythia-2.8B) gave FA4 a wrong dq on an H100: it and the unverified dims keep SDPA."""
    from neox_core.models.flash_attention4 import head_dim_reason

    assert [d for d in range(8, 257, 8) if head_dim_reason(d) is None] == [64, 128, 256]
    assert "this model: 80" in head_dim_reason(80)


def test_set_attention_kernel_reaches_every_layer_and_cpu_still_runs_sdpa(variant) -> None:
    _, cfg = variant
    model = build_model(cfg, seed=0)
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    # the tiny variants' head dim, 16, is not one of FA4's: refused, every layer left as it was
    # (grouped-query variants alike: FA4 takes them on repeated k and v)
    with pytest.raises(ValueError, match=r"head dims 64, 128, 256 only \(this model: 16\)"):
        set_attention_kernel(model, "fa4")
    assert all(m.kernel == "sdpa" for m in layers)
    cfg = dataclasses.replace(cfg, hidden_size=256)  # head dim 64
    model = build_model(cfg, seed=0)
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    with torch.no_grad():
        expected = model(ids)
        set_attention_kernel(model, "fa4")
        layers = [m for m in model.modules() if isinstance(m, Attention)]
        assert len(layers) == cfg.num_layers and all(m.kernel == "fa4" for m in layers)
        assert torch.equal(model(ids), expected)  # CPU tensors: FA4 does not apply


@pytest.mark.parametrize("fa4_ms, kernel", [(1.0, "fa4"), (3.0, "sdpa")])
def test_auto_times_grouped_query_attention_as_multi_head(monkeypatch, fa4_ms, kernel) -> None:
    """`auto` times FA4 against SDPA on a grouped-query shape and keeps the faster, as for
    multi-head attention. FA4 cannot run on this CPU machine, so its availability check and
    the timings are stand-ins here (the GPU tests in test_flash_attention4.py time the real
    kernels)."""
    from neox_core.distributed import attention_backend

    timed = []

    def time_ms(shape, device, dtype, which, backends) -> float:
        timed.append((which, shape.kv_heads))
        return fa4_ms if which == "fa4" else 2.0

    monkeypatch.setattr(attention_backend, "_fa4_unavailable", lambda *_: None)
    monkeypatch.setattr(attention_backend, "_time_ms", time_ms)
    gqa = AttentionShape(batch=2, heads=8, kv_heads=2, seq=64, head_dim=64)
    auto = choose_attention("auto", CPU, "bf16", gqa)
    assert timed == [("fa4", 2), ("sdpa", 2)]
    assert auto.kernel == kernel
    assert f"FlashAttention-4 {fa4_ms:.3f} ms, SDPA 2.000 ms" in auto.line
    assert "8/2 heads of 64" in auto.line
    assert choose_attention("fa4", CPU, "bf16", gqa).kernel == "fa4"


def test_fa4_ops_grouped_query_wrapping_is_sdpa_enable_gqa() -> None:
    """What the neox_fa4 ops do around FA4's multi-head kernels for grouped-query attention,
    with SDPA's multi-head attention in FA4's place (FA4 needs a GPU): repeat k and v per
    query head, attend, sum their gradients back per kv head. It must be SDPA's own
    `enable_gqa`, output and gradients, in FA4's [B, S, H, d] layout."""
    import torch.nn.functional as F

    from neox_core.models.flash_attention4 import _repeat_kv, _sum_groups

    g = torch.Generator().manual_seed(0)
    b, s, h, kv, d = 2, 9, 8, 2, 16
    q, k, v = (torch.randn(b, s, n, d, generator=g, dtype=torch.float64) for n in (h, kv, kv))
    dy = torch.randn(b, s, h, d, generator=g, dtype=torch.float64)

    def sdpa(q, k, v, **kw):  # FA4's layout in and out
        y = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True, **kw)  # fmt: skip
        return y.transpose(1, 2)

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    want = sdpa(*leaves, enable_gqa=True)
    want_grads = torch.autograd.grad(want, leaves, dy)
    groups = h // kv
    big = [q.clone().requires_grad_(), _repeat_kv(k, groups).requires_grad_(),
           _repeat_kv(v, groups).requires_grad_()]  # fmt: skip
    got = sdpa(*big)
    dq, dk, dv = torch.autograd.grad(got, big, dy)
    torch.testing.assert_close(got, want)
    for a, w in zip(
        (dq, _sum_groups(dk, groups), _sum_groups(dv, groups)), want_grads, strict=True
    ):
        torch.testing.assert_close(a, w)
    assert _repeat_kv(k, 1) is k and _sum_groups(dk, 1) is dk


def test_fa4_backward_fake_kernel_promises_the_layout_the_op_returns() -> None:
    """torch.compile plans buffers from the ops' fake kernel and checks the real op's output
    strides against it: with grouped-query attention dk and dv are `_sum_groups`'s sums,
    contiguous whatever layout k, v and FA4's gradients have (k and v here as the transposed
    views `causal_attention` passes, which a contiguous [B, KV, S, d] gives)."""
    from neox_core.models.flash_attention4 import _sum_groups

    b, s, h, kv, d = 2, 16, 8, 2, 64
    q = torch.empty(b, h, s, d, device="meta").transpose(1, 2)
    k, v = (torch.empty(b, kv, s, d, device="meta").transpose(1, 2) for _ in range(2))
    out, lse = torch.empty(b, s, h, d, device="meta"), torch.empty(b, h, s, device="meta")
    dq, dk, dv = torch.ops.neox_fa4.bwd(out, q, k, v, out, lse, 0.125)
    assert dq.stride() == q.stride()  # dq as FA4 makes it: laid out as q
    assert dk.shape == k.shape and dk.is_contiguous() and dv.is_contiguous()
    assert not k.is_contiguous()
    grad = torch.randn(b, h, s, d).transpose(1, 2)  # a [B, S, H, d] view, not contiguous
    summed = _sum_groups(grad, h // kv)
    assert summed.is_contiguous()
    torch.testing.assert_close(summed, grad.reshape(b, s, kv, h // kv, d).sum(3))


def test_selective_checkpointing_keeps_fa4_output_as_it_keeps_sdpa_output() -> None:
    from torch.utils.checkpoint import CheckpointPolicy

    from neox_core.distributed.activation_checkpoint import _selective_policy

    for op in (torch.ops.neox_fa4.fwd.default, torch.ops.aten.mm.default):
        assert _selective_policy(None, op) == CheckpointPolicy.MUST_SAVE
    assert _selective_policy(None, torch.ops.aten.add.Tensor) == CheckpointPolicy.PREFER_RECOMPUTE
