"""Parameter count and FLOPs per token, from the config alone (no torch).

`parameter_count` is exact: it equals `sum(p.numel() for p in build_model(cfg).parameters())`
(tested). FLOPs count multiply-adds as two operations; attention scores are counted over the
full S x S square as Megatron/GPT-NeoX do (no credit for the causal mask).
"""

from __future__ import annotations

from dataclasses import dataclass

from neox_core.config.schema import ModelConfig


@dataclass(frozen=True)
class ParameterBreakdown:
    embedding: int
    per_layer: int
    layers: int
    final_norm: int
    head: int  # 0 when the head is tied to the embedding

    @property
    def total(self) -> int:
        return self.embedding + self.layers + self.final_norm + self.head


def _sizes(cfg: ModelConfig) -> tuple[int, int, int, int, int]:
    if cfg.padded_vocab_size is None or cfg.intermediate_size is None:
        raise ValueError("padded_vocab_size and intermediate_size must be derived first")
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    kv = cfg.num_kv_heads or heads
    head_dim = h // heads
    qkv_out = (heads + 2 * kv) * head_dim
    ffn = cfg.intermediate_size
    ffn_in = 2 * ffn if cfg.activation == "swiglu" else ffn
    return h, qkv_out, heads * head_dim, ffn, ffn_in


def parameter_breakdown(cfg: ModelConfig) -> ParameterBreakdown:
    h, qkv_out, attn_out_in, ffn, ffn_in = _sizes(cfg)
    vocab = cfg.padded_vocab_size
    attn_bias = 1 if cfg.attention_bias else 0
    mlp_bias = 1 if cfg.mlp_bias else 0
    norm = h * (2 if cfg.norm_bias else 1)
    per_layer = (
        h * qkv_out
        + attn_bias * qkv_out
        + attn_out_in * h
        + attn_bias * h
        + h * ffn_in
        + mlp_bias * ffn_in
        + ffn * h
        + mlp_bias * h
        + 2 * norm
    )
    return ParameterBreakdown(
        embedding=vocab * h,
        per_layer=per_layer,
        layers=per_layer * cfg.num_layers,
        final_norm=norm,
        head=0 if cfg.tie_embeddings else vocab * h,
    )


def parameter_count(cfg: ModelConfig) -> int:
    """Exact number of parameters of the model `cfg` describes (tied head counted once)."""
    return parameter_breakdown(cfg).total


def forward_flops_per_token(cfg: ModelConfig, seq_length: int) -> int:
    """Forward FLOPs per token: 2 x (matmul weights, head included) + attention scores/values."""
    h, qkv_out, attn_out_in, ffn, ffn_in = _sizes(cfg)
    matmul_weights = cfg.num_layers * (h * qkv_out + attn_out_in * h + h * ffn_in + ffn * h)
    matmul_weights += cfg.padded_vocab_size * h
    attention = cfg.num_layers * 2 * 2 * seq_length * attn_out_in  # QK^T and AV
    return 2 * matmul_weights + attention


def training_flops_per_token(cfg: ModelConfig, seq_length: int) -> int:
    """Forward + backward (3x forward), plus one more forward when activations are recomputed."""
    factor = 4 if cfg.checkpoint_activations else 3
    return factor * forward_flops_per_token(cfg, seq_length)
