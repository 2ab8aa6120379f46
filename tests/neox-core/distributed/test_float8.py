"""`precision: fp8` conversion (distributed/float8.py): which linears become Float8Linear,
unchanged checkpoint names, the errors without torchao or without float8 hardware, and that
the converted model computes what the bf16 one does within float8's precision (on CPU,
torch._scaled_mm has a kernel, so this runs in CI)."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

from neox_core.config import ConfigError
from neox_core.config.schema import ModelConfig, NeoxConfig
from neox_core.distributed.float8 import apply_float8_training, float8_filter
from neox_core.distributed.parallelize import parallelize
from neox_core.models import build_model

pytest.importorskip("torchao.float8")

CPU = torch.device("cpu")


def _model(intermediate: int = 36) -> nn.Module:
    """LLaMA shape, untied head; hidden 32 (qkv, out: dims % 16 == 0), MLP 36 (fc_in 32 -> 72,
    fc_out 36 -> 32: not)."""
    cfg = ModelConfig(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_kv_heads=2,
        intermediate_size=intermediate,
        vocab_size=64,
        padded_vocab_size=64,
        norm="rmsnorm",
        activation="swiglu",
        attention_bias=False,
        tie_embeddings=False,
    )
    return build_model(cfg, seed=3)


def _float8_names(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if type(m).__name__ == "Float8Linear"}


def test_filter_keeps_decoder_linears_with_dims_divisible_by_16() -> None:
    keep = float8_filter()
    assert keep(nn.Linear(32, 48), "layers.0.mlp.fc_in")
    assert not keep(nn.Linear(32, 40), "layers.0.mlp.fc_in")
    assert not keep(nn.Linear(40, 32), "layers.0.mlp.fc_out")
    assert not keep(nn.Linear(32, 64), "lm_head")
    assert not keep(nn.LayerNorm(32), "layers.0.norm")


def test_conversion_picks_exactly_the_decoder_linears_with_aligned_dims() -> None:
    model = _model(intermediate=36)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert "lm_head" in linears
    converted, in_layers = apply_float8_training(model, CPU)
    expected = {
        n for n in linears if n.startswith("layers.") and n.rsplit(".", 1)[1] in ("qkv", "out")
    }
    assert len(expected) == 4 and _float8_names(model) == expected
    assert (converted, in_layers) == (4, 8)
    assert type(model.lm_head) is nn.Linear and type(model.embed) is nn.Embedding


def test_state_dict_names_shapes_and_values_are_unchanged() -> None:
    model = _model(intermediate=64)  # every decoder linear converts
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted, _ = apply_float8_training(model, CPU)
    assert converted == 8
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert type(after[k]) is torch.Tensor and after[k].shape == v.shape, k
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    # a bf16 run's checkpoint loads strictly into the fp8 model, and back
    model.load_state_dict(before, strict=True)
    _model(intermediate=64).load_state_dict(after, strict=True)


def test_fp8_forward_and_backward_track_bf16() -> None:
    ref = _model(intermediate=64)
    fp8 = copy.deepcopy(ref)
    apply_float8_training(fp8, CPU)
    tokens = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    outs = []
    for m in (ref, fp8):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m(tokens)
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        loss.backward()
        outs.append((logits.float(), loss.item()))
    (l_ref, loss_ref), (l_fp8, loss_fp8) = outs
    assert torch.isfinite(l_fp8).all()
    assert (l_fp8 - l_ref).norm() / l_ref.norm() < 0.1  # e4m3 has a 3-bit mantissa
    assert loss_fp8 == pytest.approx(loss_ref, rel=0.02)
    for (name, p_ref), p in zip(ref.named_parameters(), fp8.parameters(), strict=True):
        assert p.dtype == torch.float32 and p.grad is not None, name  # fp32 master weights
        if p_ref.grad.norm() > 0:
            assert (p.grad - p_ref.grad).norm() / p_ref.grad.norm() < 0.25, name


def test_missing_torchao_says_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao", None)
    model = _model()
    with pytest.raises(ConfigError, match=r"needs torchao: install neox-core\[fp8\]"):
        apply_float8_training(model, CPU)
    assert not _float8_names(model)


def test_cuda_before_ada_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ConfigError, match=r"compute capability 8\.9\+.*A100 is 8\.0"):
        apply_float8_training(_model(), torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        apply_float8_training(_model(), torch.device("mps"))


def test_parallelize_converts_and_logs_only_when_fp8_is_set() -> None:
    lines: list[str] = []
    cfg = NeoxConfig()
    cfg.training.compile = "false"
    model = parallelize(_model(), None, cfg, CPU, lines.append)
    assert not _float8_names(model) and not lines
    cfg.precision.dtype, cfg.precision.fp8_linear = "bf16", True
    model = parallelize(_model(), None, cfg, CPU, lines.append)
    assert len(_float8_names(model)) == 4
    assert lines == [
        " > fp8: torchao float8 (tensorwise) on 4 of 8 decoder-layer linears; "
        "embedding and LM head stay bf16"
    ]


def _fused_fp8_model() -> nn.Module:
    model = _model(intermediate=64)
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = True
    apply_float8_training(model, CPU)
    return model


def _rotary_calls_and_grads(model: nn.Module, tokens: torch.Tensor, monkeypatch) -> tuple:
    """How often the fused rotary ran (its CPU reference), and the parameter gradients."""
    from neox_core.models import fused_ops

    calls = []
    real = fused_ops._ops()

    class Spy:
        def __getattr__(self, name):
            if name == "rotary_qkv_":
                calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(fused_ops, "_ops", Spy)
    with fused_ops.force_fusion_on_cpu(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(tokens).float().sum().backward()
    monkeypatch.undo()
    return len(calls), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_fp8_attention_rotates_a_copy_with_the_fused_rotary(monkeypatch) -> None:
    """Float8Linear's QKV output is a view made inside an autograd Function, which autograd
    forbids writing in place: the fused rotary rotates a copy of it, eager and compiled (a
    compiled layer that wrote it in place failed on the H200), and trains as the plain code."""
    from neox_core.distributed.compile import apply_compile

    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    plain = _model(intermediate=64)
    apply_float8_training(plain, CPU)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain(tokens).float().sum().backward()
    expected = {n: p.grad for n, p in plain.named_parameters()}

    eager = _fused_fp8_model()
    assert all(m.rotary_on_copy for m in eager.modules() if hasattr(m, "rotary_on_copy"))
    calls, grads = _rotary_calls_and_grads(eager, tokens, monkeypatch)
    assert calls == 2  # one per layer
    graphs: list[str] = []

    def backend(gm: torch.fx.GraphModule, example_inputs):  # aot_eager, keeping the code
        graphs.append(gm.print_readable(print_output=False))
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = _fused_fp8_model()
    apply_compile(compiled, backend=backend)
    torch._dynamo.reset()
    _, compiled_grads = _rotary_calls_and_grads(compiled, tokens, monkeypatch)
    assert graphs and all("neox.rotary_" in g and "Float8" in g for g in graphs)
    for name, grad in expected.items():
        # fused and plain rotary round differently before the float8 casts (seen: <= 5.4 %)
        assert (grads[name] - grad).norm() / grad.norm() < 0.1, name
        # compiled and eager run the same ops
        assert (compiled_grads[name] - grads[name]).norm() / grad.norm() < 1e-5, name
