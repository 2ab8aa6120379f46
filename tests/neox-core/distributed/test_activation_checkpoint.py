"""Activation checkpointing applied from outside the model: same gradients, and the ops
that run again in the backward are the ones each mode should recompute."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from neox_core.config.schema import ModelConfig
from neox_core.distributed.activation_checkpoint import apply_activation_checkpointing
from neox_core.models import build_model

SHAPES = {
    "pythia": dict(norm="layernorm", activation="gelu", rotary_pct=0.25, gpt_j_residual=True),
    "llama": dict(norm="rmsnorm", activation="swiglu", num_kv_heads=2, attention_bias=False),
}


class OpCounter(TorchDispatchMode):
    """How many times matmuls and norms run (forward, backward and recomputation)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"matmul": 0, "norm": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "bmm"):
            self.counts["matmul"] += 1
        elif name in ("native_layer_norm", "rsqrt"):
            self.counts["norm"] += 1
        return func(*args, **(kwargs or {}))


def _run(shape: str, mode: str) -> tuple[float, list[torch.Tensor], dict[str, int]]:
    """(loss, gradients, op counts) of one forward/backward."""
    kw = SHAPES[shape]
    cfg = ModelConfig(
        num_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=64,
        padded_vocab_size=64,
        **kw,  # type: ignore[arg-type]
    )
    model = build_model(cfg, seed=7)
    apply_activation_checkpointing(model, mode)
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    with OpCounter() as counter:
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()
        )
        loss.backward()
    return float(loss), [p.grad.clone() for p in model.parameters()], counter.counts


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_checkpointing_keeps_gradients_and_recomputes_what_it_should(shape: str) -> None:
    loss, grads, plain = _run(shape, "none")
    counts = {}
    for mode in ("full", "selective"):
        loss_m, grads_m, counts[mode] = _run(shape, mode)
        assert loss_m == pytest.approx(loss, rel=1e-6), mode
        for g, g_m in zip(grads, grads_m, strict=True):
            torch.testing.assert_close(g_m, g, rtol=1e-5, atol=1e-6)
    layer_norms = 2 * 3  # two norms in each of the 3 layers run again in the backward
    # full: each layer's forward runs again, its matmuls included
    assert counts["full"]["matmul"] >= plain["matmul"] + 3
    assert counts["full"]["norm"] == plain["norm"] + layer_norms
    # selective: the cheap ops run again, the matmul outputs are kept
    assert counts["selective"]["matmul"] == plain["matmul"]
    assert counts["selective"]["norm"] == plain["norm"] + layer_norms


def test_unknown_mode_is_refused() -> None:
    model = build_model(ModelConfig(vocab_size=64, padded_vocab_size=64, intermediate_size=256))
    with pytest.raises(ValueError, match="activation_checkpoint_mode 'some'"):
        apply_activation_checkpointing(model, "some")
