"""Decoder models (GPT-NeoX / Pythia and LLaMA shapes) built from a `ModelConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from neox_core.config.schema import ModelConfig
    from neox_core.models.decoder import CausalLM


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def build_model(
    model_cfg: ModelConfig,
    seed: int | None = 1234,
    dtype: str = "fp32",
    device: str | torch.device | None = None,
) -> CausalLM:
    """A `CausalLM` for `model_cfg`, initialised with GPT-NeoX's init methods from `seed`.

    `seed=None` skips initialisation (for loading weights right after). `dtype` is "fp32",
    "bf16" or "fp16"; pass `device="meta"` to size a model without allocating it.
    """
    import torch

    from neox_core.models.decoder import CausalLM
    from neox_core.models.init import init_weights

    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    # construction draws from the global RNG (PyTorch's default init); keep callers' RNG intact
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        model = CausalLM(model_cfg)
    if seed is not None and str(device) != "meta":
        init_weights(model, model_cfg, seed)
    return model.to(getattr(torch, _DTYPES[dtype]))


def __getattr__(name: str):  # lazy re-exports keep `import neox_core.models` torch-free
    if name == "CausalLM":
        from neox_core.models.decoder import CausalLM

        return CausalLM
    if name == "init_weights":
        from neox_core.models.init import init_weights

        return init_weights
    raise AttributeError(name)


__all__ = ["CausalLM", "build_model", "init_weights"]
