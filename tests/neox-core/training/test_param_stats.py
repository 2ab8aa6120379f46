"""GPT-NeoX's per-parameter logging keys: log_grad_norm, log_param_norm, log_grad_pct_zeros."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from neox_core.cli import main
from neox_core.config.schema import ModelConfig
from neox_core.models import build_model
from neox_core.training.optimizer import build_optimizer
from neox_core.training.schedules import build_schedule
from neox_core.training.step import StepSettings, train_step

TINY = ModelConfig(
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=50,
    padded_vocab_size=64,
    max_position_embeddings=16,
    attention_bias=False,  # LLaMA-2 style: attention without, MLP with biases
    mlp_bias=True,
    tie_embeddings=False,
)


def _data():
    g = torch.Generator().manual_seed(0)
    while True:
        yield {"text": torch.randint(0, 50, (2, 17), generator=g)}


def _step(**flags):
    model = build_model(TINY, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, type="adam", lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0)
    sched = build_schedule(
        lr=1e-2, min_lr=0.0, warmup=0.0, lr_decay_iters=5, train_iters=5, decay_style="constant"
    )
    sched.apply(opt)
    settings = StepSettings(
        precision="fp32",
        gradient_accumulation_steps=2,
        clip_grad=1e-3,  # clips hard: the logged norms must be those from before clipping
        on_nan="skip",
        device=torch.device("cpu"),
        **flags,
    )
    return model, before, train_step(model, opt, sched, None, _data(), settings, 1)


def test_gradient_norms_are_per_parameter_and_before_clipping() -> None:
    model, before, result = _step(log_grad_norm=True, log_param_norm=True)
    names = [n for n, _ in model.named_parameters()]
    grads = {n[len("gradient_norms/") :]: v for n, v in result.param_stats.items() if "grad" in n}
    assert sorted(grads) == sorted(names)
    assert "layers.0.mlp.fc_in.bias" in grads and "layers.0.attention.qkv.bias" not in grads
    # together they make the total norm clip_grad_norm_ measured (which is far above 1e-3)
    total = math.sqrt(sum(v * v for v in grads.values()))
    assert total == pytest.approx(result.grad_norm, rel=1e-5)
    assert result.grad_norm > 1.0
    for name, value in result.param_stats.items():
        if name.startswith("parameter_norms/"):
            p = before[name[len("parameter_norms/") :]]
            assert value == pytest.approx(torch.linalg.vector_norm(p).item(), rel=1e-6)


def test_pct_zeros_and_nothing_when_off() -> None:
    _, _, off = _step()
    assert off.param_stats == {}
    model, _, result = _step(log_grad_pct_zeros=True)
    pct = {n: v for n, v in result.param_stats.items() if n.startswith("pct_grad_zeros/")}
    assert len(pct) == len(list(model.parameters()))
    # the embedding rows of tokens not in the batch and the padded rows get no gradient
    assert 0 < pct["pct_grad_zeros/embed.weight"] < 100
    assert pct["pct_grad_zeros/layers.1.mlp.fc_out.weight"] == 0


def test_training_logs_gradient_norms_to_tensorboard(tiny_config: Path, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    extra = tmp_path / "logging.yml"
    extra.write_text(
        f'{{"tensorboard_dir": "{tb}", "log_grad_norm": true, "train-iters": 3, '
        '"checkpoint-factor": 100, "eval-interval": 100}',
        encoding="utf-8",
    )
    assert main([str(tiny_config), str(extra)]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "gradient_norms/layers.0.attention.qkv.weight" in tags
    assert "gradient_norms/embed.weight" in tags
    steps = [e.step for e in acc.Scalars("gradient_norms/layers.1.mlp.fc_out.weight")]
    assert steps == [1, 2, 3]
