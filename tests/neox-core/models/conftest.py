"""Tiny model configs covering both architectures and their variants."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from neox_core.config.schema import ModelConfig

_BASE = dict(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    vocab_size=100,
    padded_vocab_size=128,
    max_position_embeddings=64,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)


def gpt_neox(**kw) -> ModelConfig:
    fields = dict(_BASE, intermediate_size=256, rotary_pct=0.25, gpt_j_residual=True)
    fields.update(kw)
    return ModelConfig(architecture="gpt_neox", **fields)


def llama(**kw) -> ModelConfig:
    fields = dict(
        _BASE,
        norm="rmsnorm",
        norm_bias=False,
        activation="swiglu",
        attention_bias=False,
        mlp_bias=False,
        intermediate_size=96,
        norm_eps=1e-6,
        tie_embeddings=False,
    )
    fields.update(kw)
    return ModelConfig(architecture="llama", **fields)


VARIANTS = {
    "neox-parallel-rotary0.25-untied": gpt_neox(tie_embeddings=False),
    "neox-sequential-rotary0.5-tied": gpt_neox(
        rotary_pct=0.5, gpt_j_residual=False, tie_embeddings=True
    ),
    "neox-full-rotary-base500": gpt_neox(rotary_pct=1.0, rotary_emb_base=500, tie_embeddings=False),
    "llama-gqa-untied": llama(num_kv_heads=2, rotary_emb_base=500000),
    "llama-mha-tied": llama(num_kv_heads=4, tie_embeddings=True),
    "llama-mqa-bias-tied": llama(
        num_kv_heads=1, attention_bias=True, mlp_bias=True, tie_embeddings=True
    ),
    # GPT-NeoX's LLaMA-2 configs: MLP biases on, attention biases off
    "llama-mlp-bias-only": llama(num_kv_heads=4, mlp_bias=True),
    "llama-attention-bias-only": llama(num_kv_heads=2, attention_bias=True),
    "neox-no-attention-bias": gpt_neox(attention_bias=False, tie_embeddings=False),
    # Mistral: grouped-query attention in a window shorter than the test sequences (19)
    "mistral-window5-gqa": llama(num_kv_heads=2, sliding_window_width=5),
}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, ModelConfig]:
    """Each tiny variant in turn, as (name, config)."""
    return request.param, VARIANTS[request.param]


@pytest.fixture
def make_neox() -> Callable[..., ModelConfig]:
    return gpt_neox


@pytest.fixture
def make_llama() -> Callable[..., ModelConfig]:
    return llama
