"""The model with neox-kernels' fused ops against its plain PyTorch code (`fused_kernels`).

On CPU the fused ops run their PyTorch references (forced with `force_fusion_on_cpu`), which
checks the wiring: layouts, parameters, residuals, the linear + cross-entropy loss. On a GPU
(marker `gpu`) the compiled kernels run under bf16 autocast, as in training.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neox_core.models import build_model, fused_ops
from neox_core.training.batch import make_batch


def _pair(cfg, device="cpu"):
    fused = build_model(dataclasses.replace(cfg, fused_kernels=True), seed=0, device=device)
    plain = build_model(dataclasses.replace(cfg, fused_kernels=False), seed=0, device=device)
    return fused, plain


def _batch(cfg, device="cpu", batch=2, seq=33):
    gen = torch.Generator(device=device).manual_seed(0)
    text = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=gen, device=device)
    label = text.clone()
    label[0, :5] = -100  # some positions not trained on
    return make_batch({"text": text, "label": label})


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def _loss_and_grads(model, batch, ctx):
    model.zero_grad(set_to_none=True)
    loss = fused_ops.lm_loss(model, batch, ctx)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_fused_model_matches_the_plain_model_on_cpu(variant) -> None:
    name, cfg = variant
    fused, plain = _pair(cfg)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    batch = _batch(cfg)
    with fused_ops.force_fusion_on_cpu():
        with torch.no_grad():
            assert _rel(fused(batch.tokens), plain(batch.tokens)) < 1e-5, name
        loss, grads = _loss_and_grads(fused, batch, torch.autocast("cpu", enabled=False))
    ref_loss, ref_grads = _loss_and_grads(plain, batch, torch.autocast("cpu", enabled=False))
    assert abs(loss.item() - ref_loss.item()) < 1e-5 * ref_loss.item(), name
    for key, grad in ref_grads.items():
        assert _rel(grads[key], grad) < 1e-4, f"{name}: {key}"


def test_switching_fusion_off_never_calls_the_fused_ops(variant, monkeypatch) -> None:
    _, cfg = variant
    _, plain = _pair(cfg)

    def trap():
        raise AssertionError("a fused op was called with fused_kernels off")

    monkeypatch.setattr(fused_ops, "_ops", trap)
    batch = _batch(cfg)
    with fused_ops.force_fusion_on_cpu():
        fused_ops.lm_loss(plain, batch, torch.autocast("cpu", enabled=False)).backward()


def test_cpu_tensors_take_the_plain_code_unless_forced(make_llama, monkeypatch) -> None:
    fused, _ = _pair(make_llama())
    monkeypatch.setattr(fused_ops, "_ops", lambda: (_ for _ in ()).throw(AssertionError("fused")))
    fused_ops.lm_loss(fused, _batch(make_llama()), torch.autocast("cpu", enabled=False)).backward()


@pytest.mark.gpu
def test_fused_kernels_match_the_plain_model_under_bf16_autocast(variant) -> None:
    from neox_kernels.ops import cuda_available

    assert cuda_available(), "the fused CUDA kernels are not built or see no GPU"
    name, cfg = variant
    fused, plain = _pair(cfg, device="cuda")
    batch = _batch(cfg, device="cuda", batch=4, seq=256)
    bf16 = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    with torch.no_grad(), bf16():
        got, expected = fused(batch.tokens).float(), plain(batch.tokens).float()
    assert _rel(got, expected) < 2e-2, name
    loss, grads = _loss_and_grads(fused, batch, bf16())
    ref_loss, ref_grads = _loss_and_grads(plain, batch, bf16())
    assert abs(loss.item() - ref_loss.item()) < 1e-2 * ref_loss.item(), name
    for key, grad in ref_grads.items():
        assert _rel(grads[key], grad) < 5e-2, f"{name}: {key} {_rel(grads[key], grad):.2e}"


def _fused_calls(model, batch, monkeypatch) -> set[str]:
    """Names of the fused ops the model's loss and forward call (their CPU references run)."""
    calls: set[str] = set()
    real = fused_ops._ops()

    class Spy:
        def __getattr__(self, name):
            calls.add(name)
            return getattr(real, name)

    monkeypatch.setattr(fused_ops, "_ops", Spy)
    with fused_ops.force_fusion_on_cpu():
        fused_ops.lm_loss(model, batch, torch.autocast("cpu", enabled=False))
    return calls


def test_neox_fused_ops_narrows_fusion_to_the_kinds_named(make_llama, monkeypatch) -> None:
    fused, _ = _pair(make_llama())
    batch = _batch(make_llama())
    everything = {"rms_norm", "rotary_qkv_", "swiglu", "linear_cross_entropy"}
    assert _fused_calls(fused, batch, monkeypatch) == everything
    for value, expected in [
        ("loss", {"linear_cross_entropy"}),
        ("norm, activation", {"rms_norm", "swiglu"}),
        ("", set()),
    ]:
        monkeypatch.setenv("NEOX_FUSED_OPS", value)
        # read at import in a run; re-read here as a fresh process would
        monkeypatch.setattr(fused_ops, "_FUSED_KINDS", fused_ops._ops_from_env())
        assert _fused_calls(fused, batch, monkeypatch) == expected, value
    monkeypatch.setenv("NEOX_FUSED_OPS", "norm,attention")
    with pytest.raises(ValueError, match=r"NEOX_FUSED_OPS.*attention"):
        fused_ops._ops_from_env()


def _fused_kinds_seen(compiled: bool) -> set[str]:
    """The op kinds `use_fused` grants on CPU (fusion forced), in eager code or traced by
    torch.compile (the eager backend: Dynamo's tracing is what `is_compiling` reports)."""

    def probe(x: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [x.sum() * fused_ops.use_fused(True, x, kind=k) for k in fused_ops.OP_KINDS]
        )

    torch._dynamo.reset()
    fn = torch.compile(probe, backend="eager", fullgraph=True) if compiled else probe
    with fused_ops.force_fusion_on_cpu():
        granted = fn(torch.ones(2))
    return {kind for kind, g in zip(fused_ops.OP_KINDS, granted.tolist(), strict=True) if g}


def test_compiled_steps_keep_norms_plain_unless_neox_fused_ops_names_them(monkeypatch) -> None:
    assert _fused_kinds_seen(compiled=False) == set(fused_ops.OP_KINDS)
    assert _fused_kinds_seen(compiled=True) == set(fused_ops.OP_KINDS) - {"norm"}
    monkeypatch.setenv("NEOX_FUSED_OPS", "norm,loss")
    monkeypatch.setattr(fused_ops, "_FUSED_KINDS", fused_ops._ops_from_env())
    monkeypatch.setattr(fused_ops, "_FUSED_KINDS_COMPILED", fused_ops._ops_from_env(compiled=True))
    assert _fused_kinds_seen(compiled=True) == {"norm", "loss"}
    assert _fused_kinds_seen(compiled=False) == {"norm", "loss"}


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_a_decoder_layer_with_fused_ops_compiles_to_one_graph(arch, make_neox, make_llama) -> None:
    """No graph break inside a layer: a break splits each layer's compiled graph in two (its
    residual gradient is then summed eagerly and fusions across the break are lost)."""
    cfg = make_neox(tie_embeddings=False) if arch == "neox" else make_llama(num_kv_heads=2)
    layer = build_model(cfg, seed=0).layers[0]
    x = torch.randn(2, 17, cfg.hidden_size, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with fused_ops.force_fusion_on_cpu(), torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(x).float().sum().backward()  # fullgraph: a break raises
    assert x.grad is not None and torch.isfinite(x.grad).all()
