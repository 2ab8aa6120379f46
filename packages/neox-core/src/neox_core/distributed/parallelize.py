"""`parallelize(model, mesh, cfg)`: TP, fp8, activation checkpointing, compile, then data parallelism.

The model file knows nothing of these (as torchtitan's parallelize step), and the order is
torchtitan's: TP turns the parameters into DTensors on mesh["tp"]
(`tensor_parallel.apply_tensor_parallel`); `precision: fp8` swaps the decoder linears for
torchao's Float8Linear (`float8.apply_float8_training`); activation checkpointing wraps each layer's
forward (`activation_checkpoint`); `torch.compile` compiles each layer, checkpoint included
(`compile`); then the ZeRO stage wraps or shards the model over mesh["dp"]
(`data_parallel.apply_data_parallel`) around the compiled layers. In a single process (no mesh) only fp8, checkpointing and compile apply. The optimizer must be
built after this, on the parameters it leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from neox_core.config.schema import NeoxConfig
from neox_core.distributed.activation_checkpoint import apply_activation_checkpointing
from neox_core.distributed.compile import apply_compile, compile_enabled
from neox_core.distributed.data_parallel import apply_data_parallel


def activation_checkpointing_mode(cfg: NeoxConfig) -> str:
    """ "none", "full" or "selective" (configs built without `load_config` have no mode yet)."""
    m = cfg.model
    if m.activation_checkpointing is not None:
        return m.activation_checkpointing
    return "full" if m.checkpoint_activations else "none"


def parallelize(
    model: nn.Module,
    mesh: DeviceMesh | None,
    cfg: NeoxConfig,
    device: torch.device,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Apply TP (if `model_parallel_size` > 1), checkpointing, compile, then the ZeRO stage.

    Returns the module to train; it may be a wrapper (DDP at ZeRO 0); `model` itself stays the
    module whose `state_dict`/parameters checkpoints read (names unchanged by compile and
    checkpointing, which work in place).
    """
    p = cfg.parallel
    if mesh is not None and mesh["tp"].size() > 1:
        from neox_core.distributed.tensor_parallel import apply_tensor_parallel

        apply_tensor_parallel(model, mesh["tp"], sequence_parallel=p.sequence_parallel)  # type: ignore[arg-type]
    if cfg.precision.fp8_linear:
        from neox_core.distributed.float8 import apply_float8_training

        converted, linears = apply_float8_training(model, device)
        if log is not None:
            log(
                f" > fp8: torchao float8 (tensorwise) on {converted} of {linears} decoder-layer "
                "linears; embedding and LM head stay bf16"
            )
    apply_activation_checkpointing(model, activation_checkpointing_mode(cfg))
    if compile_enabled(cfg.training.compile, device):
        apply_compile(model)
    if mesh is None:
        return model
    return apply_data_parallel(model, mesh["dp"], p, device)
