"""Choosing the attention kernel where FlashAttention-4 cannot run (CPU): the request decides.

The GPU side (FA4's numerics, the timed choice) is tests/neox-core/models/test_flash_attention4.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neox_core.distributed.attention_backend import (
    AttentionShape,
    choose_attention,
    set_attention_kernel,
)
from neox_core.models import build_model
from neox_core.models.layers import Attention

SHAPE = AttentionShape(batch=2, heads=4, kv_heads=2, seq=32, head_dim=16)
CPU = torch.device("cpu")


def test_auto_and_sdpa_keep_sdpa_on_cpu() -> None:
    for request in ("auto", "sdpa"):
        choice = choose_attention(request, CPU, "bf16", SHAPE)
        assert (choice.kernel, choice.sdpa_backends) == ("sdpa", [])
        assert choice.line == "PyTorch's default scaled_dot_product_attention (CPU)"


def test_fa4_where_it_cannot_run_is_an_error_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"attention_kernel = 'fa4': .*CUDA GPUs only"):
        choose_attention("fa4", CPU, "bf16", SHAPE)
    with pytest.raises(ValueError, match=r"attention_kernel = 'fa4': .*bf16/fp16.*fp32"):
        choose_attention("fa4", CPU, "fp32", SHAPE)
    with pytest.raises(ValueError, match=r"attention_kernel = 'flash'"):
        choose_attention("flash", CPU, "bf16", SHAPE)


def test_fa4_takes_only_the_head_dims_its_gpu_tests_passed() -> None:
    """d80 (Pythia-2.8B) gave FA4 a wrong dq on an H100: it and the unverified dims keep SDPA."""
    from neox_core.models.flash_attention4 import head_dim_reason

    assert [d for d in range(8, 257, 8) if head_dim_reason(d) is None] == [64, 128, 256]
    assert "this model: 80" in head_dim_reason(80)


def test_set_attention_kernel_reaches_every_layer_and_cpu_still_runs_sdpa(variant) -> None:
    _, cfg = variant
    model = build_model(cfg, seed=0)
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if any(m.num_kv_heads != m.num_heads for m in layers):
        with pytest.raises(ValueError, match="not used for grouped-query attention"):
            set_attention_kernel(model, "fa4")
        assert all(m.kernel == "sdpa" for m in layers)  # refused before any layer changed
        return
    # the tiny variants' head dim, 16, is not one of FA4's: refused, every layer left as it was
    with pytest.raises(ValueError, match=r"head dims 64, 128, 256 only \(this model: 16\)"):
        set_attention_kernel(model, "fa4")
    assert all(m.kernel == "sdpa" for m in layers)
    cfg = dataclasses.replace(cfg, hidden_size=256)  # head dim 64
    model = build_model(cfg, seed=0)
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    with torch.no_grad():
        expected = model(ids)
        set_attention_kernel(model, "fa4")
        layers = [m for m in model.modules() if isinstance(m, Attention)]
        assert len(layers) == cfg.num_layers and all(m.kernel == "fa4" for m in layers)
        assert torch.equal(model(ids), expected)  # CPU tensors: FA4 does not apply


def test_selective_checkpointing_keeps_fa4_output_as_it_keeps_sdpa_output() -> None:
    from torch.utils.checkpoint import CheckpointPolicy

    from neox_core.distributed.activation_checkpoint import _selective_policy

    for op in (torch.ops.neox_fa4.fwd.default, torch.ops.aten.mm.default):
        assert _selective_policy(None, op) == CheckpointPolicy.MUST_SAVE
    assert _selective_policy(None, torch.ops.aten.add.Tensor) == CheckpointPolicy.PREFER_RECOMPUTE
