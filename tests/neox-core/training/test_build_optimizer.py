"""build_optimizer takes neox-kernels' FusedAdamW only where its kernel applies (fp32 CUDA
parameters, fused kernels on, "adamw" among NEOX_FUSED_OPS), torch's AdamW elsewhere; the two
write the same checkpoints ("AdamW") and load each other's."""

from __future__ import annotations

import pytest
import torch

from neox_core.checkpoint.optimizer_state import load_optimizer_from_tensors, optimizer_to_tensors
from neox_core.models import fused_ops
from neox_core.training.optimizer import build_optimizer
from neox_core.training.step import StepSettings, can_defer
from neox_kernels.optim import FusedAdamW, kernel_available


def _model(dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))  # fmt: skip
    return model.to(device, dtype)


def _build(model: torch.nn.Module, **kw) -> torch.optim.Optimizer:
    return build_optimizer(
        model, type="adamw", lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw
    )


def test_cpu_parameters_take_torch_adamw() -> None:
    assert type(_build(_model())) is torch.optim.AdamW


def test_fused_adamw_where_fusion_applies_and_its_switches_turn_it_off(monkeypatch) -> None:
    with fused_ops.force_fusion_on_cpu():  # the CPU stand-in for "the kernels run"
        opt = _build(_model())
        assert type(opt) is FusedAdamW
        assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
        assert type(_build(_model(), fused_kernels=False)) is torch.optim.AdamW
        assert type(_build(_model(torch.bfloat16))) is torch.optim.AdamW  # the kernel is fp32
        monkeypatch.setenv("NEOX_FUSED_OPS", "norm,loss")
        monkeypatch.setattr(fused_ops, "_FUSED_KINDS", fused_ops._ops_from_env())
        assert type(_build(_model())) is torch.optim.AdamW
        monkeypatch.setenv("NEOX_FUSED_OPS", "adamw")
        monkeypatch.setattr(fused_ops, "_FUSED_KINDS", fused_ops._ops_from_env())
        assert type(_build(_model())) is FusedAdamW


def test_fused_adamw_allows_the_deferred_step() -> None:
    with fused_ops.force_fusion_on_cpu():
        opt = _build(_model())
    settings = StepSettings(
        precision="fp32",
        gradient_accumulation_steps=1,
        clip_grad=1.0,
        on_nan="skip",
        device=torch.device("cpu"),
        defer_sync=True,
    )
    assert can_defer(opt, None, settings)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 8, generator=g)).square().mean().backward()
        opt.step()


def test_checkpoints_of_either_optimizer_load_into_the_other() -> None:
    fused_model, plain_model = _model(), _model()
    with fused_ops.force_fusion_on_cpu():
        fused = _build(fused_model)
    plain = _build(plain_model)
    assert type(fused) is FusedAdamW and type(plain) is torch.optim.AdamW
    _train(fused_model, fused, 2)
    names_f = {id(p): n for n, p in fused_model.named_parameters()}
    names_p = {id(p): n for n, p in plain_model.named_parameters()}
    tensors, meta = optimizer_to_tensors(fused, names_f)
    assert meta["type"] == "AdamW"
    load_optimizer_from_tensors(plain, names_p, tensors, meta)
    for p in plain_model.parameters():
        assert set(plain.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
        assert int(plain.state[p]["step"]) == 2
    tensors, meta = optimizer_to_tensors(plain, names_p)
    load_optimizer_from_tensors(fused, names_f, tensors, meta)
    assert {int(fused.state[p]["step"]) for p in fused_model.parameters()} == {2}


@pytest.mark.gpu
@pytest.mark.skipif(not kernel_available(), reason="neox-kernels built without CUDA")
def test_cuda_fp32_parameters_take_fused_adamw() -> None:
    assert type(_build(_model(device="cuda"))) is FusedAdamW
    assert type(_build(_model(torch.bfloat16, "cuda"))) is torch.optim.AdamW
