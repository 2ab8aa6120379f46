"""The model's memory-bound pieces through neox-kernels' fused ops, or the plain PyTorch code.

One switch: `ModelConfig.fused_kernels` (default on). Fusion takes effect where the compiled
CUDA kernels run (CUDA tensors, neox-kernels built with CUDA); elsewhere the model runs its
plain PyTorch code unchanged, so CPU numerics do not move. `force_fusion_on_cpu` routes CPU
tensors through the fused ops' PyTorch references, which is how the wiring is tested on CPU.

Fused: norms (RMSNorm, LayerNorm), rotary in place on the fused QKV output, SwiGLU, GeLU of
the MLP, and the LM head's linear + cross-entropy (no [tokens, vocab] logits in training); and,
outside the model, the optimizer step (neox-kernels' FusedAdamW, chosen by `build_optimizer`
through `use_fused_adamw`).
Inside a compiled step the norms take the plain code by default: inductor fuses a plain norm
with the residual add and the casts around it, which measured faster than the separate kernel
(H200, neox-train's compiled step, bf16, seq 2048, micro batch 8: Pythia-1B 78,990 tokens/s
against 76,687 with fused norms, LLaMA-1.1B 67,965 against 65,714 and 1.4 GiB less memory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn import functional as F

_FORCE_ON_CPU = False
_KERNELS_RUN: bool | None = None  # neox-kernels' CUDA kernels are built and see a GPU

OP_KINDS = ("norm", "rotary", "activation", "loss", "adamw")
# kinds whose plain code torch.compile makes faster than the fused kernel (module docstring)
PLAIN_WHEN_COMPILED = frozenset({"norm"})


def _ops_from_env(compiled: bool = False) -> frozenset[str]:
    """NEOX_FUSED_OPS: a comma list of OP_KINDS that may take fused ops.

    A debugging and benchmarking switch below `fused_kernels`: it narrows which kinds of op
    fusion applies to, e.g. to compare a fused kernel with what torch.compile makes of the
    plain code inside a compiled step. Unset, every kind is fused in eager code and all but
    PLAIN_WHEN_COMPILED inside a compiled step (`compiled`); set, it holds for both.
    """
    raw = os.environ.get("NEOX_FUSED_OPS")
    if raw is None:
        return frozenset(OP_KINDS) - (PLAIN_WHEN_COMPILED if compiled else frozenset())
    kinds = frozenset(k.strip() for k in raw.split(",") if k.strip())
    unknown = sorted(kinds - set(OP_KINDS))
    if unknown:
        raise ValueError(f"NEOX_FUSED_OPS: unknown op kinds {unknown}; known: {list(OP_KINDS)}")
    return kinds


_FUSED_KINDS = _ops_from_env()
_FUSED_KINDS_COMPILED = _ops_from_env(compiled=True)


@contextlib.contextmanager
def force_fusion_on_cpu(enabled: bool = True) -> Iterator[None]:
    """Within the block, CPU tensors also take the fused ops (their PyTorch references)."""
    global _FORCE_ON_CPU
    previous, _FORCE_ON_CPU = _FORCE_ON_CPU, enabled
    try:
        yield
    finally:
        _FORCE_ON_CPU = previous


def use_fused(
    enabled: bool, x: torch.Tensor, *params: torch.Tensor | None, kind: str = "norm"
) -> bool:
    """Whether a module whose fusion switch is `enabled` takes the fused op of `kind` for x.

    DTensors (the norms under tensor parallelism, which see replicated or sequence-sharded
    inputs and replicated weights) take the plain PyTorch code: the fused ops have no DTensor
    sharding rules, and a norm's weight gradient must be summed over the sequence shards, which
    DTensor's own ops do. Inside the TP regions the rotary and the activation see each rank's
    plain local tensors and take their fused ops.
    """
    kinds = _FUSED_KINDS_COMPILED if torch.compiler.is_compiling() else _FUSED_KINDS
    if not enabled or kind not in kinds:
        return False
    if isinstance(x, DTensor) or any(isinstance(p, DTensor) for p in params):
        return False
    if x.is_cuda:
        global _KERNELS_RUN
        if _KERNELS_RUN is None:  # asked once: a plain global is what torch.compile guards on
            from neox_kernels.ops import cuda_available

            _KERNELS_RUN = cuda_available()
        return _KERNELS_RUN
    return _FORCE_ON_CPU


def use_fused_adamw(enabled: bool, params: list[torch.Tensor]) -> bool:
    """Whether `build_optimizer` takes neox-kernels' FusedAdamW for these parameters.

    The same switches as the model's fused ops: `enabled` (`fused_kernels`) and the kind
    "adamw" in NEOX_FUSED_OPS (the optimizer step is never compiled, so the eager kinds hold).
    Its kernel updates fp32 parameters, so every parameter must be fp32; on CUDA the kernels
    must run (built, a GPU, NEOX_KERNELS_REFERENCE unset), on CPU only under
    `force_fusion_on_cpu` (FusedAdamW then runs torch's CPU step: the wiring tests).
    """
    if not enabled or "adamw" not in _FUSED_KINDS or not params:
        return False
    if not all(p.dtype == torch.float32 for p in params):
        return False
    if all(p.is_cuda for p in params):
        from neox_kernels.optim import kernel_available

        return kernel_available()
    return _FORCE_ON_CPU and not any(p.is_cuda for p in params)


def owns(x: torch.Tensor) -> bool:
    """Whether an in-place op may write x: not a view (conservatively: torch does not say
    which views autograd guards; on CUDA even nn.Linear's 3-D output is a view, so eager
    attention rotates a copy).

    Inside a compiled region the question is not asked: `Tensor._is_view` breaks the graph
    (one break per decoder layer split each layer's graph in two), and functionalization
    makes in-place writes safe there. The guarded views a layer sees in practice are handled
    before, by having those attentions rotate a copy (`Attention.rotary_on_copy`): tensor
    parallelism's local shard (`to_local`'s view; distributed/tensor_parallel.py) and the output
    of fp8's Float8Linear, made inside an autograd Function (distributed/float8.py).
    """
    return torch.compiler.is_compiling() or not x._is_view()


def _ops():
    from neox_kernels import ops

    return ops


def norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fused norm with the module's own parameters (RMSNorm or nn.LayerNorm)."""
    ops = _ops()
    if isinstance(module, nn.LayerNorm):
        return ops.layer_norm(x, module.weight, module.bias, module.eps)
    return ops.rms_norm(x, module.weight, module.bias, module.eps)


def rotary_qkv_(
    mixed: torch.Tensor, num_heads: int, num_kv_heads: int, rotary_dim: int, base: float
) -> torch.Tensor:
    """Rotate the query and key heads of the fused QKV output in place (GPT-NeoX layout)."""
    return _ops().rotary_qkv_(mixed, num_heads, num_kv_heads, rotary_dim, base)


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """up * silu(gate) for h = [up; gate]."""
    return _ops().swiglu(h)


def gelu(h: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GeLU, as F.gelu; the bias is already added by the linear layer."""
    return _ops().bias_gelu(h, None, approximate=False)


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module"):  # DistributedDataParallel and similar wrappers
        model = model.module
    return model


def lm_loss(model: nn.Module, batch, precision_ctx) -> torch.Tensor:
    """The masked LM loss of a micro-batch: fused linear + cross-entropy where fusion is on.

    `precision_ctx` is the autocast context of the forward. The plain path is
    `neox_core.distributed.loss.lm_loss` on `model(tokens)` (vocabulary-parallel under TP).
    Under tensor parallelism the fused path is neox-kernels' vocabulary-parallel linear +
    cross-entropy on each rank's head shard: no rank holds logits, not even its shard's.
    """
    from neox_core.distributed.loss import lm_loss as plain_lm_loss

    inner = _unwrap(model)
    enabled = getattr(getattr(inner, "config", None), "fused_kernels", False)
    fused = use_fused(enabled, batch.tokens, kind="loss") and hasattr(inner, "head_weight")
    if not fused:
        with precision_ctx:
            logits = model(batch.tokens)
        return plain_lm_loss(logits, batch.labels, batch.loss_mask)
    labels = torch.where(batch.loss_mask > 0, batch.labels, torch.full_like(batch.labels, -100))
    with precision_ctx:
        hidden = model(batch.tokens, return_hidden=True)
        # read after the forward: FSDP2 (ZeRO 1-3) has gathered the head for it, and its root
        # keeps it gathered until the backward; a head still a DTensor is vocabulary-parallel
        weight = inner.head_weight()
        if not isinstance(weight, DTensor):
            return _ops().linear_cross_entropy(hidden, weight, labels)
        shard = _vocab_shard(hidden, weight)
        if shard is not None:
            local_hidden, local_weight, vocab_start, group = shard
            return _ops().vocab_parallel_linear_cross_entropy(
                local_hidden, local_weight, labels, vocab_start, group
            )
        logits = F.linear(hidden, weight)  # a layout the fused op does not take
    return plain_lm_loss(logits, batch.labels, batch.loss_mask)


def _vocab_shard(hidden: torch.Tensor, weight: DTensor):
    """(this rank's hidden states, its head rows, their first vocabulary id, the TP group) for
    the vocabulary-parallel fused loss, or None for a layout it does not take. The hidden
    states are replicated over the TP group; each rank's loss gives only its shard's part of
    their gradient, so `to_local` marks that gradient partial: DTensor sums it over the
    group, as for any column-parallel layer."""
    from torch.distributed.tensor import Partial, Replicate, Shard

    mesh = weight.device_mesh
    if mesh.ndim != 1 or weight.placements != (Shard(0),):
        return None
    if not isinstance(hidden, DTensor) or hidden.device_mesh != mesh:
        return None
    if hidden.placements != (Replicate(),):
        return None
    local_weight = weight.to_local()
    if local_weight.shape[0] * mesh.size() != weight.shape[0]:
        return None  # uneven shards: the plain path's checks name the problem
    local_hidden = hidden.to_local(grad_placements=[Partial()])
    start = mesh.get_local_rank() * local_weight.shape[0]
    return local_hidden, local_weight, start, mesh.get_group()
