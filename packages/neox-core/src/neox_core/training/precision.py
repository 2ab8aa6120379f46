"""Mixed precision: fp32 parameters (the master weights) with bf16/fp16 autocast, and the
DeepSpeed-style dynamic loss scaler fp16 needs.

Loss-scaler semantics follow DeepSpeed's `DynamicLossScaler`, which GPT-NeoX configures with
`initial_scale_power` (scale starts at 2**power), `loss_scale_window` (steps without overflow
before doubling), `hysteresis` (overflows tolerated before halving) and `min_loss_scale`.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(dtype: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"precision {dtype!r} unknown; expected fp32, bf16 or fp16")
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[dtype])


class LossScaleAtMinimumError(RuntimeError):
    """fp16 gradients keep overflowing at the minimum loss scale: training cannot continue."""


@dataclass
class DynamicLossScaler:
    cur_scale: float
    scale_window: int = 1000
    min_scale: float = 1.0
    delayed_shift: int = 2
    cur_iter: int = 0
    last_overflow_iter: int = -1
    cur_hysteresis: int = 2
    scale_factor: float = 2.0

    @classmethod
    def from_config(
        cls,
        initial_scale_power: int,
        loss_scale_window: int,
        hysteresis: int,
        min_loss_scale: float,
    ) -> DynamicLossScaler:
        return cls(
            cur_scale=float(2**initial_scale_power),
            scale_window=loss_scale_window,
            min_scale=min_loss_scale,
            delayed_shift=hysteresis,
            cur_hysteresis=hysteresis,
        )

    @property
    def scale(self) -> float:
        return self.cur_scale

    def update(self, overflow: bool) -> None:
        if overflow:
            if self.delayed_shift == 1 or self.cur_hysteresis == 1:
                if self.cur_scale == self.min_scale:
                    raise LossScaleAtMinimumError(
                        f"fp16 gradients overflow at the minimum loss scale {self.min_scale}"
                    )
                self.cur_scale = max(self.cur_scale / self.scale_factor, self.min_scale)
            else:
                self.cur_hysteresis -= 1
            self.last_overflow_iter = self.cur_iter
        elif (self.cur_iter - self.last_overflow_iter) % self.scale_window == 0:
            self.cur_hysteresis = self.delayed_shift
            self.cur_scale *= self.scale_factor
        self.cur_iter += 1

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class StaticLossScaler:
    """A fixed `loss_scale` (GPT-NeoX's `loss_scale` > 0); overflowing steps are skipped."""

    cur_scale: float = 1.0

    @property
    def scale(self) -> float:
        return self.cur_scale

    def update(self, overflow: bool) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cur_scale = float(state["cur_scale"])
