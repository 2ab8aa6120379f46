"""`parallelize(model, mesh, cfg)`: tensor parallelism, then data parallelism, from outside.

The model file knows nothing of either (as torchtitan's parallelize step): TP turns the
parameters into DTensors on mesh["tp"] (`tensor_parallel.apply_tensor_parallel`); then the ZeRO stage
wraps or shards the model over mesh["dp"] (`data_parallel.apply_data_parallel`). The optimizer
must be built after this, on the parameters it leaves.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from neox_core.config.schema import NeoxConfig
from neox_core.distributed.data_parallel import apply_data_parallel


def parallelize(
    model: nn.Module, mesh: DeviceMesh, cfg: NeoxConfig, device: torch.device
) -> nn.Module:
    """Apply TP (if `model_parallel_size` > 1) then the ZeRO stage; returns the module to train.

    The returned module may be a wrapper (DDP at ZeRO 0); `model` itself stays the module whose
    `state_dict`/parameters checkpoints read.
    """
    p = cfg.parallel
    if mesh["tp"].size() > 1:
        from neox_core.distributed.tensor_parallel import apply_tensor_parallel

        apply_tensor_parallel(model, mesh["tp"], sequence_parallel=p.sequence_parallel)  # type: ignore[arg-type]
        # the fused kernels take plain tensors, not DTensors: TP runs the PyTorch code
        for module in model.modules():
            if hasattr(module, "fused"):
                module.fused = False
    return apply_data_parallel(model, mesh["dp"], p, device)
