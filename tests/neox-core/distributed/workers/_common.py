"""Tiny model configs and process-group setup shared by the distributed worker scripts."""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist

from neox_core.config.schema import ModelConfig

_BASE = dict(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=8,
    vocab_size=100,
    padded_vocab_size=128,
    max_position_embeddings=64,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)


def gpt_neox(**kw) -> ModelConfig:
    """GPT-NeoX (Pythia) shape: LayerNorm, GELU, biases, partial rotary, parallel residual."""
    fields = dict(_BASE, intermediate_size=256, rotary_pct=0.25, gpt_j_residual=True)
    fields.update(kw)
    return ModelConfig(architecture="gpt_neox", **fields)


def llama(**kw) -> ModelConfig:
    """LLaMA shape: RMSNorm, SwiGLU, no biases, grouped-query attention, untied head."""
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
        num_kv_heads=2,
    )
    fields.update(kw)
    return ModelConfig(architecture="llama", **fields)


VARIANTS: dict[str, ModelConfig] = {
    "neox-parallel-untied": gpt_neox(tie_embeddings=False),
    "neox-sequential-tied": gpt_neox(rotary_pct=0.5, gpt_j_residual=False, tie_embeddings=True),
    "llama-gqa": llama(),
    "llama-mqa-bias-tied": llama(
        num_kv_heads=1, attention_bias=True, mlp_bias=True, tie_embeddings=True
    ),
    "llama-mha-ckpt": llama(num_kv_heads=8, checkpoint_activations=True),
}


def init_gloo() -> tuple[int, int]:
    """(rank, world size) after joining the torchrun group on gloo, one thread per rank."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    return int(os.environ["RANK"]), dist.get_world_size()


def report_and_finish(rank: int, report: dict) -> None:
    """Rank 0 prints `RESULT {json}` (what the tests parse); then every rank leaves the group."""
    if rank == 0:
        print("RESULT " + json.dumps(report), flush=True)
    dist.barrier()
    dist.destroy_process_group()
