"""`precision: fp8`: the decoder layers' linears train in float8 through torchao.

As torchtitan does it: `torchao.float8.convert_to_float8_training` with tensorwise dynamic
scaling swaps each selected `nn.Linear` for a `Float8Linear` in place (same parameter names
and shapes, so checkpoints load either way); matmul inputs are cast to float8 per step while
the weights stay fp32 masters and everything else runs under bf16 autocast as `precision: bf16`.
Only linears inside `model.layers` whose in and out features are multiples of 16 are converted
(the float8 GEMM's alignment); the LM head and embedding stay bf16. Applied by `parallelize`
before compile and data parallelism. torchao is the optional extra `neox-core[fp8]`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn

from neox_core.config.errors import ConfigError

# Hopper (9.0) and Ada (8.9) have float8 tensor cores; torch._scaled_mm also runs on CPU.
MIN_CUDA_CAPABILITY = (8, 9)


def check_float8_device(device: torch.device) -> None:
    """Refuse fp8 where torch's float8 matmul cannot run: CUDA below sm_89, non-CPU/CUDA."""
    if device.type == "cpu":
        return  # torch._scaled_mm has a CPU kernel: slow, but the same numerics (tests)
    if device.type != "cuda":
        raise ConfigError(f"precision: fp8 needs a CUDA GPU (sm_89 or newer) or CPU, not {device}")
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CUDA_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise ConfigError(
            f"precision: fp8 needs float8 tensor cores (compute capability 8.9+, Ada or Hopper); "
            f"{name} is {cap[0]}.{cap[1]}: use precision: bf16"
        )


def import_torchao_float8() -> ModuleType:
    """torchao.float8, or a ConfigError saying how to install it (it is an optional extra)."""
    try:
        from torchao import float8
    except ImportError as e:
        raise ConfigError(
            "precision: fp8 needs torchao: install neox-core[fp8] "
            f"(pip install 'neox-core[fp8]' or uv sync --extra fp8); import failed: {e}"
        ) from e
    return float8


def float8_filter(layers_prefix: str = "layers.") -> Callable[[nn.Module, str], bool]:
    """torchtitan's module filter: linears under `model.layers` with dims divisible by 16."""

    def keep(module: nn.Module, fqn: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and fqn.startswith(layers_prefix)
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
        )

    return keep


def apply_float8_training(model: nn.Module, device: torch.device) -> tuple[int, int]:
    """Convert the decoder linears of `model` in place; returns (converted, linears in layers)."""
    check_float8_device(device)
    float8 = import_torchao_float8()
    keep = float8_filter()
    in_layers = [
        fqn
        for fqn, m in model.named_modules()
        if isinstance(m, nn.Linear) and fqn.startswith("layers.")
    ]
    config = float8.Float8LinearConfig.from_recipe_name("tensorwise")
    float8.convert_to_float8_training(model, config=config, module_filter_fn=keep)
    converted = sum(1 for m in model.modules() if _is_float8(m))
    # Float8Linear returns a view made inside its autograd Function, which autograd forbids
    # writing in place: attentions whose QKV projection is converted rotate a copy with the
    # fused rotary. (Rotating out of place with the plain code instead cost LLaMA-1.1B's fp8
    # step 27 ms of 206 in inductor kernels that recompute cos/sin per element; H200.)
    for module in model.modules():
        if _is_float8(getattr(module, "qkv", None)) and hasattr(module, "rotary_on_copy"):
            module.rotary_on_copy = True
    return converted, len(in_layers)


def _is_float8(module: object) -> bool:
    return type(module).__name__ == "Float8Linear"
