"""GPT-NeoX's kernel-fusion switches: accepted into `cfg.fusion`, reported when without effect.

A fusion switch chooses how a function is computed, never which function: neox computes the
same numbers with or without it. `FUSION_STATUS` maps each switch to the fused path it turns on
in neox, or to None while no fused kernel is wired to it yet; the dry run lists every switch
that is on and has no effect, with the reason. Wiring a kernel means setting its entry here.
"""

from __future__ import annotations

from dataclasses import fields

from neox_core.config.schema import FusionConfig

FUSION_KEYS: tuple[str, ...] = tuple(f.name for f in fields(FusionConfig))

# switch -> what it turns on in neox (None: nothing yet)
FUSION_STATUS: dict[str, str | None] = dict.fromkeys(FUSION_KEYS)

_WHY_NOT: dict[str, str] = {
    "scaled_upper_triang_masked_softmax_fusion": (
        "causal attention runs in scaled_dot_product_attention (flash/cuDNN kernels on GPU), "
        "which fuses scaling, masking and softmax already"
    ),
    "scaled_masked_softmax_fusion": (
        "attention runs in scaled_dot_product_attention, which fuses the masked softmax already"
    ),
    "bias_gelu_fusion": (
        "neox's fused GeLU is switched by `fused_kernels` and computes exact GELU as HF's "
        "GPT-NeoX models do; GPT-NeoX's fused kernel uses the tanh approximation"
    ),
    "mamba_selective_scan_fusion": "Mamba layers are not supported",
    "mamba_causal_conv_fusion": "Mamba layers are not supported",
    "mamba_inner_func_fusion": "Mamba layers are not supported",
}


def inactive_reason(key: str) -> str | None:
    """Why switch `key`, when on, has no effect in neox; None when it is wired."""
    if FUSION_STATUS.get(key) is not None:
        return None
    return _WHY_NOT.get(
        key,
        "neox's own fused kernels (norms, rotary, SwiGLU/GeLU, linear + cross-entropy, the "
        "AdamW step) are switched by the neox key `fused_kernels` (on by default where they "
        "run), not per kernel",
    )
