"""The dry run's per-rank memory estimate against tensors measured on the CPU.

Parameters, gradients and AdamW state: exact bytes of a real model after a step. Activations:
the bytes of every tensor autograd saves during the forward and loss of one micro batch
(found with `torch.autograd.graph.saved_tensors_hooks`, counted once per storage; weights and
per-position rotary tables excluded, they do not grow with the batch), which is what the
estimate counts from the model's code. The per-rank counts under TP x ZeRO 3 are checked
against real sharded tensors in tests/neox-core/distributed/test_checkpoint_layouts.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neox_core.config.schema import ModelConfig
from neox_core.memory_estimate import (
    activation_bytes_per_token,
    estimate_memory,
    format_memory_estimate,
    parameter_elements,
)
from neox_core.models import build_model
from neox_core.training.batch import Batch, masked_lm_loss
from neox_core.training.optimizer import build_optimizer

BASE = dict(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=8,
    vocab_size=100,
    padded_vocab_size=128,
    max_position_embeddings=64,
)
MODELS = {
    "gpt_neox": ModelConfig(
        architecture="gpt_neox", intermediate_size=256, rotary_pct=0.25, gpt_j_residual=True,
        tie_embeddings=False, **BASE,
    ),
    "gpt_neox_sequential": ModelConfig(architecture="gpt_neox", intermediate_size=256, **BASE),
    "llama_gqa": ModelConfig(
        architecture="llama", norm="rmsnorm", norm_bias=False, activation="swiglu",
        attention_bias=False, mlp_bias=False, intermediate_size=96, tie_embeddings=False, num_kv_heads=2, **BASE,
    ),
    "llama_mha": ModelConfig(
        architecture="llama", norm="rmsnorm", norm_bias=False, activation="swiglu",
        attention_bias=False, mlp_bias=False, intermediate_size=96, tie_embeddings=False, **BASE,
    ),
}  # fmt: skip
B, S = 3, 40  # neither is any weight's dimension, so the filter below is unambiguous


def _saved_bytes_per_token(cfg: ModelConfig, precision: str, checkpointing: bool) -> float:
    model = build_model(cfg, seed=1)
    model.checkpoint_activations = checkpointing
    tokens = torch.randint(0, cfg.vocab_size, (B, S))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.ndim and t.shape[0] in (B, B * S):  # per-token tensors (batch or flattened)
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=dtype, enabled=precision != "fp32"):
            logits = model(tokens)
        masked_lm_loss(logits, Batch(tokens, tokens, torch.ones(B, S)))
    return sum(storages.values()) / (B * S)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_bytes_match_what_autograd_saves(name, precision, checkpointing) -> None:
    cfg = MODELS[name]
    per_layer, per_layer_ckpt, head = activation_bytes_per_token(cfg, precision, 1, False)
    estimate = cfg.num_layers * (per_layer_ckpt if checkpointing else per_layer) + head
    measured = _saved_bytes_per_token(cfg, precision, checkpointing)
    assert abs(estimate - measured) <= 0.02 * measured, (estimate, measured)


@pytest.mark.parametrize("name", ["gpt_neox", "llama_gqa"])
def test_parameter_gradient_and_adam_bytes_are_exact_on_one_rank(name) -> None:
    cfg = MODELS[name]
    model = build_model(cfg, seed=1)
    opt = build_optimizer(model, type="adamw", lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.1)  # fmt: skip
    tokens = torch.randint(0, cfg.vocab_size, (2, 8))
    model(tokens).float().logsumexp(-1).mean().backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    opt.step()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    state = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.ndim  # the moments; `step` is one scalar each
    )
    ncfg = _neox_config(cfg, zero=0)
    est = estimate_memory(ncfg, _Dims(dp=1, tp=1))
    assert (est.parameters, est.gradients, est.optimizer) == (params, grads, state)


def test_sharding_divides_what_it_should() -> None:
    cfg = MODELS["llama_gqa"]
    whole, total, _ = parameter_elements(cfg, 1, 1)
    assert whole == total == sum(p.numel() for p in build_model(cfg, seed=1).parameters())
    tp2, _, _ = parameter_elements(cfg, 2, 1)
    norms = cfg.hidden_size * (2 * cfg.num_layers + 1)  # replicated under TP
    assert tp2 == (total - norms) // 2 + norms
    z3 = estimate_memory(_neox_config(cfg, zero=3), _Dims(dp=4, tp=2))
    z0 = estimate_memory(_neox_config(cfg, zero=0), _Dims(dp=4, tp=2))
    assert z0.parameters == 4 * tp2 and z3.parameters < z0.parameters / 3.5
    assert z3.gathered_parameters > 0 and z0.gathered_parameters == 0
    z1 = estimate_memory(_neox_config(cfg, zero=1), _Dims(dp=4, tp=2))
    assert z1.parameters + z1.gathered_parameters == z0.parameters  # gathered in fwd/bwd
    assert z1.gradients == z1.parameters  # sharded, with one micro batch per step
    # with gradient accumulation ZeRO 1 sums the gradients unsharded until the last micro
    # batch (training/step.py's no_sync); ZeRO 2 keeps reducing them every micro batch
    z1_gas = estimate_memory(_neox_config(cfg, zero=1, gas=4), _Dims(dp=4, tp=2))
    z2_gas = estimate_memory(_neox_config(cfg, zero=2, gas=4), _Dims(dp=4, tp=2))
    assert z1_gas.gradients == z0.gradients and z2_gas.gradients == z1.gradients
    assert "full size" in format_memory_estimate(_neox_config(cfg, zero=1, gas=4), _Dims(4, 2))
    for zero in (1, 3):  # bf16 gathers: the layers' part at 2 bytes, the root's at 4
        fp32 = estimate_memory(_neox_config(cfg, zero=zero), _Dims(dp=4, tp=2))
        bf16 = estimate_memory(_neox_config(cfg, zero=zero, gather="bf16"), _Dims(dp=4, tp=2))
        assert fp32.gathered_parameters / 2 <= bf16.gathered_parameters
        assert bf16.gathered_parameters < fp32.gathered_parameters
        assert bf16.parameters == fp32.parameters  # the master weights stay fp32
    sp = estimate_memory(_neox_config(cfg, zero=0, sp=True), _Dims(dp=1, tp=2))
    no_sp = estimate_memory(_neox_config(cfg, zero=0), _Dims(dp=1, tp=2))
    assert sp.activations < no_sp.activations
    assert no_sp.activations_checkpointed < no_sp.activations


def test_format_names_every_part() -> None:
    text = format_memory_estimate(_neox_config(MODELS["gpt_neox"], zero=3), _Dims(dp=2, tp=2))
    for word in ("parameters", "gradients", "optimizer state", "gathered params",
                 "activations", "with activation checkpointing", "peak"):  # fmt: skip
        assert word in text


@dataclasses.dataclass(frozen=True)
class _Dims:
    dp: int
    tp: int
    pp: int = 1


def _neox_config(
    model: ModelConfig, *, zero: int, sp: bool = False, gather: str = "fp32", gas: int = 1
):
    from neox_core.config.schema import NeoxConfig

    cfg = NeoxConfig(model=model)
    cfg.parallel.zero_stage = zero
    cfg.parallel.zero_gather_dtype = gather
    cfg.parallel.sequence_parallel = sp
    cfg.training.micro_batch_size = 2
    cfg.training.gradient_accumulation_steps = gas
    cfg.data.seq_length = 32
    return cfg
