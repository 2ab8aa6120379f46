"""The decoder language model shared by GPT-NeoX (Pythia) and LLaMA shapes.

Reads top to bottom: token embedding -> N x DecoderLayer -> final norm -> LM head. What
differs between the architectures is configuration (norm kind, activation, parallel residual,
partial rotary, biases, grouped-query or sliding-window attention, tied head), not code paths.

Canonical parameter names (the checkpoint format stores these):

    embed.weight                                  [padded_vocab, hidden]
    layers.{i}.input_norm.{weight,bias}           bias only with norm_bias
    layers.{i}.attention.qkv.{weight,bias}        fused QKV, layout in layers.Attention;
    layers.{i}.attention.out.{weight,bias}        biases only with attention_bias
    layers.{i}.post_attention_norm.{weight,bias}
    layers.{i}.mlp.fc_in.{weight,bias}            SwiGLU: [up; gate]; biases only with mlp_bias
    layers.{i}.mlp.fc_out.{weight,bias}
    final_norm.{weight,bias}
    lm_head.weight                                absent when tie_embeddings (embed.weight is used)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from neox_core.config.schema import ModelConfig
from neox_core.models.layers import MLP, Attention, make_norm


class DecoderLayer(nn.Module):
    """Pre-norm block; with `gpt_j_residual` attention and MLP read the same input (x + a + m)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.parallel_residual = cfg.gpt_j_residual
        fused = cfg.fused_kernels
        self.input_norm = make_norm(cfg.norm, cfg.hidden_size, cfg.norm_eps, cfg.norm_bias, fused)
        self.attention = Attention(
            hidden_size=cfg.hidden_size,
            num_heads=cfg.num_attention_heads,
            num_kv_heads=cfg.num_kv_heads or cfg.num_attention_heads,
            rotary_dim=int(head_dim * cfg.rotary_pct),
            rotary_base=cfg.rotary_emb_base,
            bias=cfg.attention_bias,
            dropout=cfg.attention_dropout,
            sliding_window=cfg.sliding_window_width,
            fused=fused,
        )
        self.post_attention_norm = make_norm(
            cfg.norm, cfg.hidden_size, cfg.norm_eps, cfg.norm_bias, fused
        )
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.activation, cfg.mlp_bias, fused)
        self.hidden_dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.parallel_residual:
            a = self.hidden_dropout(self.attention(self.input_norm(x)))
            m = self.hidden_dropout(self.mlp(self.post_attention_norm(x)))
            return x + a + m
        x = x + self.hidden_dropout(self.attention(self.input_norm(x)))
        return x + self.hidden_dropout(self.mlp(self.post_attention_norm(x)))


class CausalLM(nn.Module):
    """forward(input_ids [B, S] int64) -> logits [B, S, padded_vocab_size]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.padded_vocab_size is None or cfg.intermediate_size is None:
            raise ValueError(
                "ModelConfig needs padded_vocab_size and intermediate_size; build it with "
                "neox_core.config.load_config, which derives them"
            )
        self.config = cfg
        self.checkpoint_activations = cfg.checkpoint_activations
        self.embed = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(
            cfg.norm, cfg.hidden_size, cfg.norm_eps, cfg.norm_bias, cfg.fused_kernels
        )
        self.lm_head = (
            None
            if cfg.tie_embeddings
            else nn.Linear(cfg.hidden_size, cfg.padded_vocab_size, bias=False)
        )

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor, return_hidden: bool = False) -> torch.Tensor:
        """Logits, or with return_hidden the final-normed hidden states (for a fused loss)."""
        x = self.embed(input_ids)
        for layer in self.layers:
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        x = self.final_norm(x)
        return x if return_hidden else F.linear(x, self.head_weight())
