"""The neox model's tensors for a config: names, shapes and how the format splits them.

Both come from neox-core (its model on the meta device, its split rules), so a converted
checkpoint is checked against the very model `neox-train` builds.
"""

from __future__ import annotations

from typing import Any

import torch

from neox_ckpt.errors import ConversionError
from neox_ckpt.neox_writer import PlannedTensor

# tensors HF and legacy GPT-NeoX files may hold that neox's model recomputes instead of storing
RECOMPUTED_BUFFERS = ("rotary_emb.inv_freq", "attention.bias", "attention.masked_bias")


def plan_tensors(
    model_cfg: Any, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]
) -> list[PlannedTensor]:
    """Split dims and fused blocks of each neox tensor, by neox-core's format rules."""
    from neox_core.checkpoint import tp_split_dim
    from neox_core.checkpoint.sharding import fused_tp_blocks

    head_dim = model_cfg.hidden_size // model_cfg.num_attention_heads
    blocks = fused_tp_blocks(
        shapes,
        num_heads=model_cfg.num_attention_heads,
        num_kv_heads=model_cfg.num_kv_heads or model_cfg.num_attention_heads,
        head_dim=head_dim,
        intermediate_size=model_cfg.intermediate_size,
        gated_mlp=model_cfg.activation == "swiglu",
    )
    return [
        PlannedTensor(name, dtype, shape, tp_split_dim(name, len(shape)), blocks.get(name))
        for name, (shape, dtype) in shapes.items()
    ]


def model_shapes(model_cfg: Any) -> dict[str, tuple[int, ...]]:
    """Names and shapes of neox-core's model for `model_cfg` (built on the meta device)."""
    from neox_core.models import build_model

    model = build_model(model_cfg, seed=None, device="meta")
    return {n: tuple(t.shape) for n, t in model.state_dict().items()}


def check_against_model(model_cfg: Any, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """The tensors must be exactly those of neox-core's model for this config."""
    expected = model_shapes(model_cfg)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [
        f"{n} {shapes[n]} vs {expected[n]}"
        for n in expected
        if n in shapes and shapes[n] != expected[n]
    ]
    if missing or unexpected or wrong:
        raise ConversionError(
            f"{where}: weights do not fit neox's model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape (weights vs model) {wrong[:5]}"
        )
