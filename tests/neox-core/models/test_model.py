"""The decoder itself: parameter count, causality, dtypes, checkpointing, init, weights I/O."""

from __future__ import annotations

import math

import pytest
import torch

from neox_core.flops import parameter_count
from neox_core.models import build_model
from neox_core.models.hf_names import NameMappingError, load_by_name, load_weights, save_weights


def test_analytic_parameter_count_equals_the_built_model(variant) -> None:
    _, cfg = variant
    model = build_model(cfg, device="meta")
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())


def test_parameter_count_with_biased_rmsnorm_and_untied_swiglu(make_llama) -> None:
    cfg = make_llama(
        norm_bias=True, attention_bias=True, mlp_bias=True, num_kv_heads=2, num_layers=3
    )
    model = build_model(cfg, device="meta")
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())


def test_state_dict_names_are_canonical(make_neox, make_llama) -> None:
    names = set(build_model(make_neox(tie_embeddings=False), seed=0).state_dict())
    assert {
        "embed.weight",
        "layers.0.input_norm.weight",
        "layers.0.input_norm.bias",
        "layers.0.attention.qkv.weight",
        "layers.0.attention.qkv.bias",
        "layers.0.attention.out.weight",
        "layers.0.post_attention_norm.weight",
        "layers.0.mlp.fc_in.weight",
        "layers.0.mlp.fc_out.bias",
        "final_norm.weight",
        "lm_head.weight",
    } <= names
    tied = set(build_model(make_llama(tie_embeddings=True), seed=0).state_dict())
    assert "lm_head.weight" not in tied and "final_norm.bias" not in tied


def test_future_tokens_do_not_change_past_logits(variant) -> None:
    model = build_model(variant[1], seed=0).eval()
    ids = torch.randint(0, 100, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 100
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_forward_is_close_to_fp32(dtype: str, make_llama) -> None:
    cfg = make_llama(num_kv_heads=2)
    full = build_model(cfg, seed=0).eval()
    half = build_model(cfg, seed=0, dtype=dtype).eval()
    assert next(half.parameters()).dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        ref, got = full(ids), half(ids).float()
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_rotary_angles_stay_fp32_in_a_bf16_model(make_llama) -> None:
    cfg = make_llama(rotary_emb_base=500000)
    full = build_model(cfg, seed=0)
    half = build_model(cfg, seed=0, dtype="bf16")
    cos32, sin32 = full.layers[0].attention.rotary(4096, torch.device("cpu"))
    cos16, sin16 = half.layers[0].attention.rotary(4096, torch.device("cpu"))
    assert cos16.dtype == torch.float32
    assert torch.equal(cos16, cos32) and torch.equal(sin16, sin32)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(make_neox) -> None:
    ids = torch.randint(0, 100, (2, 16))
    results = []
    for checkpointing in (False, True):
        cfg = make_neox(checkpoint_activations=checkpointing, hidden_dropout=0.0)
        model = build_model(cfg, seed=0).train()
        loss = torch.nn.functional.cross_entropy(
            model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()
        )
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name


def test_init_methods_follow_gpt_neox(make_neox) -> None:
    cfg = make_neox(
        hidden_size=256,
        num_attention_heads=4,
        intermediate_size=1024,
        num_layers=4,
        init_method="small_init",
        output_layer_init_method="wang_init",
        tie_embeddings=False,
    )
    model = build_model(cfg, seed=0)
    small = math.sqrt(2 / (5 * 256))
    wang = 2 / 4 / math.sqrt(256)
    layer = model.layers[0]
    assert layer.attention.qkv.weight.std().item() == pytest.approx(small, rel=0.05)
    assert layer.mlp.fc_in.weight.std().item() == pytest.approx(small, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(small, rel=0.05)
    assert layer.attention.out.weight.std().item() == pytest.approx(wang, rel=0.05)
    assert layer.mlp.fc_out.weight.std().item() == pytest.approx(wang, rel=0.05)
    assert layer.attention.qkv.bias.abs().sum().item() == 0
    assert layer.input_norm.weight.eq(1).all()

    normal = build_model(make_neox(hidden_size=256, intermediate_size=1024, num_layers=8), seed=0)
    assert normal.layers[0].attention.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert normal.layers[0].mlp.fc_out.weight.std().item() == pytest.approx(scaled, rel=0.05)


def test_init_is_deterministic_per_seed_and_leaves_global_rng_alone(make_neox) -> None:
    torch.manual_seed(42)
    before = torch.random.get_rng_state()
    a = build_model(make_neox(), seed=5).state_dict()
    assert torch.equal(before, torch.random.get_rng_state())
    b = build_model(make_neox(), seed=5).state_dict()
    c = build_model(make_neox(), seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.attention.qkv.weight"], c["layers.0.attention.qkv.weight"])


def test_weights_save_and_load_by_name(tmp_path, make_llama) -> None:
    cfg = make_llama(num_kv_heads=2)
    model = build_model(cfg, seed=1)
    path = tmp_path / "w.safetensors"
    save_weights(model, str(path))
    other = build_model(cfg, seed=2)
    load_weights(other, str(path))
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_load_by_name_reports_what_does_not_fit(make_llama) -> None:
    model = build_model(make_llama(num_kv_heads=2), seed=1)
    tensors = dict(model.state_dict())
    tensors.pop("final_norm.weight")
    tensors["extra.weight"] = torch.zeros(1)
    tensors["embed.weight"] = torch.zeros(3, 3)
    with pytest.raises(NameMappingError) as err:
        load_by_name(model, tensors)
    message = str(err.value)
    assert "missing ['final_norm.weight']" in message
    assert "unexpected ['extra.weight']" in message
    assert "embed.weight: model (128, 64), given (3, 3)" in message


@pytest.mark.parametrize("autocast", [False, True])
def test_layernorm_with_bf16_weights_on_fp32_inputs_upcasts_the_weights(autocast) -> None:
    """FSDP's bf16 gathers hand a LayerNorm bf16 weights while the residual stream is fp32
    (CPU autocast does not cast layer_norm as CUDA's does): the weights are upcast."""
    from neox_core.models.layers import make_norm

    norm = make_norm("layernorm", 16, 1e-5, bias=True)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 16)
    expected = torch.nn.functional.layer_norm(
        x, (16,), norm.weight.bfloat16().float(), norm.bias.bfloat16().float(), 1e-5
    )
    norm.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = norm(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
