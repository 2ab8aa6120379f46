"""Names of the precisions neox uses, and their torch dtypes."""

from __future__ import annotations

import torch

from neox_ckpt.errors import ConversionError

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {v: k for k, v in TORCH_DTYPES.items()}


def precision_name(dtype: torch.dtype, where: str) -> str:
    try:
        return NAMES[dtype]
    except KeyError:
        raise ConversionError(f"{where}: weights of dtype {dtype} are not fp32/bf16/fp16") from None
