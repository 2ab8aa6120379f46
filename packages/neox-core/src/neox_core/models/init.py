"""GPT-NeoX's weight initialisation methods (megatron/model/init_functions.py semantics)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from neox_core.config.schema import ModelConfig

InitFn = Callable[[torch.Tensor], None]


def init_fn(name: str, cfg: ModelConfig) -> InitFn:
    """The initialiser GPT-NeoX names `name`, sized for this model."""
    n, h, sigma = cfg.num_layers, cfg.hidden_size, cfg.init_std
    if name == "normal":
        return lambda t: nn.init.normal_(t, 0.0, sigma)
    if name == "scaled_normal":
        return lambda t: nn.init.normal_(t, 0.0, sigma / math.sqrt(2.0 * n))
    if name == "small_init":
        return lambda t: nn.init.normal_(t, 0.0, math.sqrt(2 / (5 * h)))
    if name == "wang_init":
        return lambda t: nn.init.normal_(t, 0.0, 2 / n / math.sqrt(h))
    if name == "xavier_uniform":
        return lambda t: nn.init.xavier_uniform_(t)
    if name == "xavier_normal":
        return lambda t: nn.init.xavier_normal_(t)
    if name == "orthogonal":
        return lambda t: _orthogonal(t, math.sqrt(2.0))
    if name == "scaled_orthogonal":
        return lambda t: _orthogonal(t, math.sqrt(2.0 / n))
    raise ValueError(f"unknown init method {name!r}")


def _orthogonal(t: torch.Tensor, gain: float) -> None:
    # QR runs in fp32; fp16/bf16 tensors get the rounded result
    tmp = torch.empty(t.shape, dtype=torch.float32, device=t.device)
    nn.init.orthogonal_(tmp, gain=gain)
    t.copy_(tmp)


@torch.no_grad()
def init_weights(model: nn.Module, cfg: ModelConfig, seed: int) -> None:
    """Initialise every parameter as GPT-NeoX does, deterministically from `seed`.

    Linear weights and the embedding use `init_method`; the two projections that write into the
    residual stream (attention `out`, MLP `fc_out`) use `output_layer_init_method`; biases are
    zero; norm weights one.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        base = init_fn(cfg.init_method, cfg)
        residual_out = init_fn(cfg.output_layer_init_method, cfg)
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                leaf = name.rsplit(".", 1)[-1]
                (residual_out if leaf in ("out", "fc_out") else base)(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                base(module.weight)
            elif hasattr(module, "weight") and "norm" in name.rsplit(".", 1)[-1]:
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
    finally:
        torch.random.set_rng_state(generator_state)
