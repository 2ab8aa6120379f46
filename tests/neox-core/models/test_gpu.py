"""On a CUDA device: attention runs on the flash SDPA kernel in bf16 and agrees with fp32.

A sliding window is a mask, which SDPA's flash kernel does not take: those models run on the
memory-efficient kernel (also fused, mask-capable) instead.
"""

from __future__ import annotations

import copy

import pytest
import torch

from neox_core.models import build_model

pytestmark = pytest.mark.gpu


def _flash_only(cfg):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if getattr(cfg, "sliding_window_width", None):
        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION])
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


def test_bf16_flash_forward_and_backward_agree_with_fp32(variant) -> None:
    name, cfg = variant
    ids = torch.randint(0, cfg.vocab_size, (4, 256), device="cuda")
    reference = build_model(cfg, seed=0, device="cuda").eval()
    fast = build_model(cfg, seed=0, dtype="bf16", device="cuda").eval()
    with torch.no_grad():
        expected = reference(ids)
        with _flash_only(cfg):  # raises if the flash kernel cannot take these inputs
            got = fast(ids).float()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() < 0.03 * scale, name

    fast.train()
    fast.checkpoint_activations = True
    with _flash_only(cfg):
        logits = fast(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters())


def test_fp32_on_gpu_matches_cpu(variant) -> None:
    _, cfg = variant
    ids = torch.randint(0, cfg.vocab_size, (2, 33))
    cpu = build_model(cfg, seed=0).eval()
    gpu = copy.deepcopy(cpu).cuda()  # same weights: CUDA's RNG would draw different ones
    with torch.no_grad():
        diff = (gpu(ids.cuda()).cpu() - cpu(ids)).abs().max().item()
    assert diff < 1e-4
