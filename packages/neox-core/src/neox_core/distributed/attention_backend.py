"""Which scaled-dot-product-attention kernel runs: chosen once, then set around each step.

On Hopper the cuDNN and FlashAttention-2 backends of `F.scaled_dot_product_attention` are
the fast ones (cuDNN's is faster on H100/H200 for head dims 64-128). The choice is made here,
outside the model, by running each candidate forward and backward once on the model's head
shape; the step then enters `sdpa_context` with the winner first and the rest as fallbacks
(a mask, or a shape one kernel does not take, falls through to the next).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

# fastest first on Hopper; efficient and math are always-available fallbacks
PREFERENCE = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def _runs(
    backend: Any, head_dim: int, heads: int, dtype: torch.dtype, device: torch.device
) -> bool:
    from torch.nn.attention import sdpa_kernel

    shape = (1, heads, 128, head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in "qkv")
    try:
        with sdpa_kernel([backend]):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.sum().backward()
        torch.cuda.synchronize(device)
        return True
    except RuntimeError:
        return False


def choose_sdpa_backends(
    device: torch.device, dtype: str, head_dim: int, heads: int
) -> tuple[list[Any], str]:
    """(backends in priority order, a line for the log); ([], ...) leaves torch's default."""
    if device.type != "cuda":
        return [], "PyTorch's default scaled_dot_product_attention (CPU)"
    from torch.nn.attention import SDPBackend

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
    candidates = [getattr(SDPBackend, name) for name in PREFERENCE]
    working = [b for b in candidates[:2] if _runs(b, head_dim, heads, torch_dtype, device)]
    if not working:
        return [], f"PyTorch's default scaled_dot_product_attention ({dtype}: no cuDNN/flash)"
    order = working + [b for b in candidates if b not in working]
    names = [b.name.removesuffix("_ATTENTION").lower() for b in order]
    return order, f"scaled_dot_product_attention, {names[0]} backend (then {', '.join(names[1:])})"


def sdpa_context(backends: list[Any]) -> contextlib.AbstractContextManager[Any]:
    """The SDPA backend priority for a forward and backward; a no-op for []."""
    if not backends:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(backends, set_priority=True)
