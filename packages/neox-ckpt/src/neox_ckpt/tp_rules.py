"""Which tensor-parallel degrees a model admits: every rank must hold whole heads.

Shard metadata alone would let a cut fall inside an attention head (the rows divide, the
heads do not); such a layout round-trips bit for bit but computes nothing a TP rank could use.
"""

from __future__ import annotations

from typing import Any

from neox_ckpt.errors import ConversionError


def check_tp_degree(model: Any, tp: int, where: str) -> None:
    """`model` is a neox ModelConfig (or its dict form from a checkpoint's config.json)."""

    def get(key: str) -> Any:
        return model.get(key) if isinstance(model, dict) else getattr(model, key)

    heads = get("num_attention_heads")
    kv = get("num_kv_heads") or heads
    problems = []
    if heads % tp:
        problems.append(f"num_attention_heads {heads}")
    if kv % tp:
        problems.append(f"num_kv_heads {kv} (neox does not replicate kv heads across ranks)")
    inter = get("intermediate_size")
    if inter and inter % tp:
        problems.append(f"intermediate_size {inter}")
    if problems:
        raise ConversionError(
            f"{where}: --tp {tp} does not divide {', '.join(problems)}; each tensor-parallel "
            "rank must hold whole heads and an equal share of the MLP"
        )
