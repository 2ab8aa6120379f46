"""With the same weights, neox logits equal transformers' GPTNeoX / Llama / Mistral models.

Random tiny HF models are built on the spot (no download), their state dicts loaded into neox
by name, and the fp32 logits compared.
"""

from __future__ import annotations

import pytest
import torch

from neox_core.models import build_model
from neox_core.models.hf_names import (
    GPT_NEOX_HEAD_NAMES,
    from_hf,
    fuse_qkv,
    hf_architecture,
    hf_config_kwargs,
    hf_state_dict,
    load_hf_state_dict,
    model_config_from_hf,
    split_qkv,
)

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5


def _hf_model(cfg, attn: str):
    arch = hf_architecture(cfg)
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    config = config_class(**hf_config_kwargs(cfg), attn_implementation=attn)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # make norms and biases non-trivial so a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_match_transformers(variant, attn: str) -> None:
    name, cfg = variant
    hf = _hf_model(cfg, attn)
    ours = build_model(cfg, seed=None).eval()
    load_hf_state_dict(ours, hf.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (3, 19), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == (3, 19, cfg.padded_vocab_size)
    diff = (got - expected).abs().max().item()
    assert diff < TOLERANCE, f"{name}/{attn}: max abs diff {diff:.3e}"


def test_neox_to_hf_round_trip_is_exact(variant) -> None:
    _, cfg = variant
    model = build_model(cfg, seed=3)
    hf = hf_state_dict(model)
    back = from_hf(hf, cfg)
    own = model.state_dict()
    assert set(back) == set(own)
    for key, tensor in own.items():
        assert torch.equal(back[key], tensor), key
    if hf_architecture(cfg) == "GPTNeoXForCausalLM":
        assert GPT_NEOX_HEAD_NAMES[0] in hf  # the name HF checkpoint files use


def test_fused_qkv_layouts(make_llama) -> None:
    mha, gqa = make_llama(num_kv_heads=4), make_llama(num_kv_heads=2)
    d = 16
    q, k, v = (torch.full((64, 8), float(i)) for i in range(3))
    fused = fuse_qkv(q, k, v, mha)
    # multi-head: per head [q; k; v] blocks of head_dim rows
    assert (
        fused[:d].eq(0).all() and fused[d : 2 * d].eq(1).all() and fused[2 * d : 3 * d].eq(2).all()
    )
    kv = torch.full((32, 8), 1.0), torch.full((32, 8), 2.0)
    fused = fuse_qkv(q, *kv, gqa)
    # grouped-query: all q rows, then all k, then all v
    assert fused[:64].eq(0).all() and fused[64:96].eq(1).all() and fused[96:].eq(2).all()
    for cfg, parts in ((mha, (q, k, v)), (gqa, (q, *kv))):
        for a, b in zip(split_qkv(fuse_qkv(*parts, cfg), cfg), parts, strict=True):
            assert torch.equal(a, b)


def test_no_hf_equivalent_is_reported(make_neox) -> None:
    from neox_core.models.hf_names import NameMappingError

    with pytest.raises(NameMappingError, match="no grouped-query attention"):
        hf_architecture(make_neox(num_kv_heads=2))


def test_model_config_from_hf_config_round_trips(variant) -> None:
    name, cfg = variant
    arch = hf_architecture(cfg)
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    back = model_config_from_hf(config_class(**hf_config_kwargs(cfg)).to_dict())
    for field in (
        "architecture",
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_kv_heads",
        "intermediate_size",
        "padded_vocab_size",
        "norm",
        "norm_eps",
        "norm_bias",
        "activation",
        "rotary_pct",
        "rotary_emb_base",
        "gpt_j_residual",
        "attention_bias",
        "mlp_bias",
        "sliding_window_width",
        "tie_embeddings",
    ):
        expected = getattr(cfg, field)
        if field == "num_kv_heads" and expected is None:  # None means one per query head
            expected = cfg.num_attention_heads
        assert getattr(back, field) == expected, (name, field)
