"""Which attention kernel runs: chosen once, outside the model, then set on it and the step.

On Hopper the cuDNN and FlashAttention-2 backends of `F.scaled_dot_product_attention` are
the fast SDPA ones (cuDNN's is faster on H100/H200 for head dims 64-128). The step enters
`sdpa_context` with the ones that run on the model's head shape first and the rest as
fallbacks (a mask, or a shape one kernel does not take, falls through to the next).

FlashAttention-4 (`models/flash_attention4.py`, when `flash-attn-4` is installed) is faster
than cuDNN at some shapes and slower at others, so under `attention_kernel: auto` both run
forward and backward on the model's own attention shape and the faster one is kept; every
rank takes the same choice. The log line gives the times.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# fastest first on Hopper; efficient and math are always-available fallbacks
PREFERENCE = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
KERNELS = ("auto", "sdpa", "fa4")  # the `attention_kernel` key's values


@dataclass(frozen=True)
class AttentionShape:
    """One rank's attention call: micro batch, local query and kv heads, sequence, head dim."""

    batch: int
    heads: int
    kv_heads: int
    seq: int
    head_dim: int


@dataclass
class AttentionChoice:
    kernel: str = "sdpa"  # Attention.kernel on every layer: "sdpa" | "fa4"
    sdpa_backends: list[Any] = field(default_factory=list)  # priority order; []: torch's
    line: str = ""  # for the log


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

    torch_dtype = _torch_dtype(dtype)
    candidates = [getattr(SDPBackend, name) for name in PREFERENCE]
    working = [b for b in candidates[:2] if _runs(b, head_dim, heads, torch_dtype, device)]
    if not working:
        return [], f"PyTorch's default scaled_dot_product_attention ({dtype}: no cuDNN/flash)"
    order = working + [b for b in candidates if b not in working]
    names = [b.name.removesuffix("_ATTENTION").lower() for b in order]
    return order, f"scaled_dot_product_attention, {names[0]} backend (then {', '.join(names[1:])})"


def _torch_dtype(dtype: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)


def choose_attention(
    request: str, device: torch.device, dtype: str, shape: AttentionShape
) -> AttentionChoice:
    """The kernel for `attention_kernel: request` ("auto", "sdpa" or "fa4") at this shape.

    "fa4" where FlashAttention-4 cannot run is an error naming the reason; "auto" then keeps
    SDPA and says why in the log line.
    """
    if request not in KERNELS:
        raise ValueError(f"attention_kernel = {request!r}: expected one of {', '.join(KERNELS)}")
    backends, line = choose_sdpa_backends(device, dtype, shape.head_dim, shape.heads)
    if request == "sdpa":
        return AttentionChoice("sdpa", backends, line)
    why_not = _fa4_unavailable(device, dtype, shape)
    if why_not is not None:
        if request == "fa4":
            raise ValueError(f"attention_kernel = 'fa4': {why_not}")
        # worth a word only where FA4 could have run (a Hopper-class GPU)
        gpu = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
        return AttentionChoice("sdpa", backends, line + (f"; not FA4: {why_not}" if gpu else ""))
    if request == "fa4":
        return AttentionChoice("fa4", backends, "FlashAttention-4 (attention_kernel: fa4)")
    failure = "on another rank"
    try:  # FA4 compiles its kernels for this shape here: a failure keeps SDPA, with the reason
        fa4_ms = _time_ms(shape, device, dtype, "fa4", backends)
    except Exception as e:
        fa4_ms, failure = float("inf"), f"{type(e).__name__}: {e}".splitlines()[0][:200]
    fa4_ms, sdpa_ms = _agreed([fa4_ms, _time_ms(shape, device, dtype, "sdpa", backends)], device)
    if fa4_ms == float("inf"):
        return AttentionChoice("sdpa", backends, f"{line}; FlashAttention-4 failed: {failure}")
    where = (
        f"FlashAttention-4 {fa4_ms:.3f} ms, SDPA {sdpa_ms:.3f} ms forward + backward per layer "
        f"at micro batch {shape.batch}, seq {shape.seq}, {shape.heads}/{shape.kv_heads} heads of "
        f"{shape.head_dim}"
    )
    if fa4_ms < sdpa_ms:
        return AttentionChoice(
            "fa4", backends, f"FlashAttention-4, timed faster than {line}: {where}"
        )
    return AttentionChoice("sdpa", backends, f"{line}, timed faster than FlashAttention-4: {where}")


def _fa4_unavailable(device: torch.device, dtype: str, shape: AttentionShape) -> str | None:
    if dtype not in ("bf16", "fp16"):
        return f"FlashAttention-4 takes bf16/fp16, and the precision is {dtype}"
    from neox_core.models.flash_attention4 import unavailable_reason

    return unavailable_reason(device, shape.head_dim)


# Grouped-query attention is timed as multi-head attention is. FA4's own grouped-query backward
# gave wrong gradients in tests/neox-core/models/test_flash_attention4.py (flash-attn-4
# 4.0.0b36, 2026-12-05: dq, dk and dv 1.1-1.7 from fp32 at head dims 16 and 32 on an H200),
# so neox's FA4 ops repeat k and v per query head (models/flash_attention4.py), a path those
# tests pass (H100, 2026-12-06). The repeat costs FA4 its lead at LLaMA-1.1B's shape (H100,
# 2026-12-06, micro batch 8, seq 2048, 32/4 heads of 64): 1.56-1.59 ms against SDPA's
# 1.49-1.50 per layer, so "auto" keeps SDPA there (step 227.8 ms; 230.8 with fa4 forced).


def _time_ms(
    shape: AttentionShape, device: torch.device, dtype: str, kernel: str, backends: list[Any]
) -> float:
    """GPU time of one causal attention forward + backward, after warm-up (which also
    JIT-compiles FA4's kernels for this shape).

    A sleep kernel holds the GPU while the host enqueues the timed calls, so the host's
    launch cost is left out: a step's host runs ahead of the GPU, and FA4's forward spends
    0.19-0.29 ms of host time per call launching from Python (H100 profile, Pythia-410M).
    Timed call by call, FA4 lost at that shape (1.218 against 0.884 ms, H200) although it
    made the compiled step faster. Timed this way (H100, 2026-12-06) it wins, 0.627 against
    0.755 ms, as it does in the step (95.5 against 98.4 ms) and with the model's own layout of
    q, k and v in the fused QKV output, eager or compiled (0.70-0.72 against 0.82-0.83 ms).
    """
    from neox_core.models.flash_attention4 import causal_attention

    g = torch.Generator(device=device).manual_seed(0)
    dt = _torch_dtype(dtype)

    def rand(heads: int) -> torch.Tensor:
        # [B, S, heads, d] seen as [B, heads, S, d]: the layout the model's q, k, v have
        s = (shape.batch, shape.seq, heads, shape.head_dim)
        x = torch.randn(s, device=device, dtype=dt, generator=g).requires_grad_()
        return x.transpose(1, 2)

    q, k, v = rand(shape.heads), rand(shape.kv_heads), rand(shape.kv_heads)
    dy = rand(shape.heads).detach()
    gqa = shape.kv_heads != shape.heads

    def once() -> None:
        if kernel == "fa4":
            y = causal_attention(q, k, v)
        else:
            with sdpa_context(backends):
                y = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=True, enable_gqa=gqa
                )
        torch.autograd.grad(y, (q, k, v), dy)  # no accumulation into leaves: the kernels only

    for _ in range(3):
        once()
    reps = 10
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    torch.cuda._sleep(200_000_000)  # about 0.1 s of GPU clock cycles
    start.record()
    for _ in range(reps):
        once()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def _agreed(times: list[float], device: torch.device) -> list[float]:
    """The times averaged over ranks, so that every rank makes the same choice."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return times
    t = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [x / dist.get_world_size() for x in t.tolist()]


def set_attention_kernel(model: nn.Module, kernel: str) -> None:
    """Every attention layer of `model` (this rank's part) runs `kernel`; "fa4" is refused at
    a head dim FA4 is not used at (`flash_attention4.head_dim_reason`), as `choose_attention`
    refuses it."""
    from neox_core.models.flash_attention4 import head_dim_reason
    from neox_core.models.layers import Attention

    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if kernel == "fa4":
        why = next(filter(None, (head_dim_reason(m.head_dim) for m in layers)), None)
        if why:
            raise ValueError(f"attention kernel 'fa4': {why}")
    for m in layers:
        m.kernel = kernel


def sdpa_context(backends: list[Any]) -> contextlib.AbstractContextManager[Any]:
    """The SDPA backend priority for a forward and backward; a no-op for []."""
    if not backends:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(backends, set_priority=True)
