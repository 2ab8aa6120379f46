"""FlashAttention-4 through neox's custom ops, against fp32 attention, eager and compiled.

Runs where `flash-attn-4` is installed on a GPU of compute capability 9.0 or newer; elsewhere
each test skips with the reason `unavailable_reason` gives.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from neox_core.distributed.attention_backend import (
    AttentionShape,
    choose_attention,
    set_attention_kernel,
)
from neox_core.models import build_model
from neox_core.models.flash_attention4 import causal_attention, unavailable_reason
from neox_core.models.layers import Attention

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _fa4_runs() -> None:
    why = unavailable_reason(torch.device("cuda"), 64)
    if why:
        pytest.skip(why)


# (batch, seq, heads, kv heads, head dim): Pythia (d64, d256), d128 as Pythia-1.4B and
# LLaMA-7B, and a sequence that is not a multiple of the kernels' tiles; grouped-query as
# LLaMA-1.1B (8 query heads per kv head, d64) and LLaMA-3-8B (4, d128), which neox runs on k and
# v repeated per query head. At the head dims neox lets FA4 take (flash_attention4.HEAD_DIMS):
# other head dims keep SDPA (these tests failed at 16, 32, 80).
SHAPES = [
    (2, 1024, 8, 8, 64),
    (1, 512, 4, 4, 256),
    (1, 777, 4, 4, 128),
    (2, 1024, 16, 2, 64),
    (1, 777, 8, 2, 128),
]


def _qkv(b: int, s: int, h: int, kv: int, d: int, layout: str, g: torch.Generator):
    """q [B, H, S, d], k and v [B, KV, S, d] in bf16: separate tensors, or ("fused") views of
    one QKV projection output split as the model splits it."""
    if layout == "fused":
        mixed = torch.randn(b, s, (h + 2 * kv) * d, device="cuda", generator=g)
        attention = Attention(h * d, h, kv, rotary_dim=0, rotary_base=1e4, bias=False, dropout=0)
        return attention.split_qkv(mixed.bfloat16())
    return [torch.randn(b, n, s, d, device="cuda", generator=g).bfloat16() for n in (h, kv, kv)]


@pytest.mark.parametrize("layout", ["separate", "fused"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}s{}h{}kv{}d{}".format(*s))
def test_fa4_agrees_with_fp32_attention_as_sdpa_does(shape, compiled, layout) -> None:
    b, s, h, kv, d = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = _qkv(b, s, h, kv, d, layout, g)
    dy = torch.randn(b, h, s, d, device="cuda", generator=g).bfloat16()
    ref = [t.float().requires_grad_() for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*ref, is_causal=True, enable_gqa=kv != h)
    expected.backward(dy.float())

    def errors(fn) -> list[float]:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]  # views stay views
        y = fn(*leaves)
        y.backward(dy)
        got = [y, *(t.grad for t in leaves)]
        want = [expected, *(t.grad for t in ref)]
        return [(a.float() - w).abs().max().item() for a, w in zip(got, want, strict=True)]

    if compiled:  # each shape and layout compiles anew: stay under dynamo's recompile limit
        torch._dynamo.reset()
    fa4 = torch.compile(causal_attention, fullgraph=True) if compiled else causal_attention
    ours = errors(fa4)
    sdpa = errors(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                 enable_gqa=kv != h))  # fmt: skip
    # bf16 inputs: FA4 is as far from fp32 as SDPA's own bf16 kernels, within 2x and 1e-2
    for name, a, r in zip(("out", "dq", "dk", "dv"), ours, sdpa, strict=True):
        assert a <= 2 * r + 1e-2, (name, ours, sdpa)


def _loss_and_grads(cfg, ids: torch.Tensor, kernel: str | None):
    """One forward and backward: fp32 without autocast (kernel None), else bf16 autocast."""
    model = build_model(cfg, seed=0, device="cuda")
    set_attention_kernel(model, kernel or "sdpa")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=kernel is not None):
        logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss.item(), {n: p.grad.float() for n, p in model.named_parameters()}


def test_model_with_fa4_is_as_close_to_fp32_as_with_sdpa(variant) -> None:
    name, cfg = variant
    if getattr(cfg, "sliding_window_width", None):
        pytest.skip("sliding-window layers always take SDPA")
    # head dim 64, as Pythia-410M (the tiny variants' 16 is below FA4's)
    _model_against_fp32(name, dataclasses.replace(cfg, hidden_size=256))


def test_other_head_dims_keep_sdpa() -> None:
    for d in (16, 32, 80, 96):
        why = "head dims 64, 128, 256 only"
        assert why in unavailable_reason(torch.device("cuda"), d)
        shape = AttentionShape(batch=2, heads=4, kv_heads=4, seq=256, head_dim=d)
        auto = choose_attention("auto", torch.device("cuda"), "bf16", shape)
        assert auto.kernel == "sdpa" and why in auto.line
        with pytest.raises(ValueError, match=why):
            choose_attention("fa4", torch.device("cuda"), "bf16", shape)


def _model_against_fp32(name: str, cfg) -> None:
    ids = torch.randint(0, cfg.vocab_size, (2, 257), device="cuda")
    ref_loss, ref = _loss_and_grads(cfg, ids, None)
    sdpa_loss, sdpa = _loss_and_grads(cfg, ids, "sdpa")
    fa4_loss, fa4 = _loss_and_grads(cfg, ids, "fa4")
    assert abs(fa4_loss - ref_loss) <= 2 * abs(sdpa_loss - ref_loss) + 1e-3 * ref_loss, name

    def rel(grads: dict, names: list[str]) -> float:
        err = torch.cat([(grads[n] - ref[n]).flatten() for n in names]).norm()
        return (err / (torch.cat([ref[n].flatten() for n in names]).norm() + 1e-12)).item()

    # bf16 rounding moves every gradient a little (some are zero in exact arithmetic, a key
    # bias's), FA4's somewhat more than SDPA's; a wrong kernel (mask, scale,
    # layout) moves them by their own size. So: the whole gradient, and each tensor, within
    # a few percent of fp32, and the whole within 4x SDPA's own distance.
    report = {n: (rel(fa4, [n]), rel(sdpa, [n])) for n in ref}
    print(name, " ".join(f"{n}={a:.1e}/{b:.1e}" for n, (a, b) in report.items()))
    everything = list(ref)
    assert rel(fa4, everything) <= max(4 * rel(sdpa, everything), 1e-2), (name, report)
    assert all(a <= max(4 * b, 5e-2) for a, b in report.values()), (name, report)


def test_the_chooser_times_both_and_fa4_on_request() -> None:
    shape = AttentionShape(batch=2, heads=8, kv_heads=8, seq=512, head_dim=64)
    choice = choose_attention("auto", torch.device("cuda"), "bf16", shape)
    assert choice.kernel in ("sdpa", "fa4") and "FlashAttention-4" in choice.line
    assert re.search(
        r"FlashAttention-4 [0-9.]+ ms, SDPA [0-9.]+ ms forward \+ backward", choice.line
    )
    assert choose_attention("fa4", torch.device("cuda"), "bf16", shape).kernel == "fa4"
    with pytest.raises(ValueError, match=r"attention_kernel = 'fa4'.*bf16/fp16"):
        choose_attention("fa4", torch.device("cuda"), "fp32", shape)


def test_grouped_query_attention_is_timed_as_multi_head() -> None:
    shape = AttentionShape(batch=2, heads=8, kv_heads=2, seq=512, head_dim=64)
    auto = choose_attention("auto", torch.device("cuda"), "bf16", shape)
    assert auto.kernel in ("sdpa", "fa4")
    assert re.search(r"FlashAttention-4 [0-9.]+ ms, SDPA [0-9.]+ ms forward \+ backward", auto.line)
    assert "8/2 heads of 64" in auto.line
    assert choose_attention("fa4", torch.device("cuda"), "bf16", shape).kernel == "fa4"
