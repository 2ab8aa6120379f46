"""GPT-NeoX's learning-rate schedule (`AnnealingLR`): warmup, then linear/cosine/... decay.

Semantics kept from GPT-NeoX: `warmup_iter = warmup * lr_decay_iters` may be fractional; the
scheduler is stepped once per *applied* optimizer step (skipped fp16 steps do not advance
it), so iteration k trains with `lr_at(k - 1 - skipped)`; warmup is linear from 0 and not
clamped to `min_lr`; every other value is `max(lr, min_lr)`.

One deliberate difference: past `lr_decay_iters` the decay stays at its end value
(GPT-NeoX's cosine would climb back up). `inverse_sqrt` is not in GPT-NeoX; it follows
Megatron-LM: `lr * sqrt(warmup_iter) / sqrt(num_iters)` after warmup.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

DECAY_STYLES = ("linear", "cosine", "constant", "inverse_sqrt", "exponential")
SHAPE_FIELDS = ("start_lr", "min_lr", "warmup_iter", "end_iter", "decay_style")


def lr_at(
    num_iters: float,
    *,
    start_lr: float,
    min_lr: float,
    warmup_iter: float,
    end_iter: int,
    decay_style: str,
) -> float:
    """The learning rate after `num_iters` scheduler steps."""
    if warmup_iter > 0 and num_iters <= warmup_iter:
        return float(start_lr) * num_iters / warmup_iter
    if decay_style == "inverse_sqrt":
        lr = start_lr * math.sqrt(max(warmup_iter, 1.0)) / math.sqrt(max(num_iters, 1.0))
        return max(lr, min_lr)
    span = end_iter - warmup_iter
    n = min(num_iters - warmup_iter, span)
    if decay_style == "linear":
        lr = start_lr * (span - n) / span if span > 0 else min_lr
    elif decay_style == "cosine":
        lr = (
            min_lr + (start_lr - min_lr) / 2.0 * (math.cos(math.pi * n / span) + 1)
            if span > 0
            else min_lr
        )
    elif decay_style == "exponential":
        lr = start_lr * math.exp(-0.693 * n / span) if span > 0 else min_lr
    elif decay_style == "constant":
        lr = start_lr
    else:
        raise ValueError(f"lr_decay_style {decay_style!r} unknown; expected one of {DECAY_STYLES}")
    return max(lr, min_lr)


@dataclass
class AnnealingSchedule:
    """Sets the optimizer's learning rate each step; its state goes into checkpoints."""

    start_lr: float
    min_lr: float
    warmup_iter: float
    end_iter: int
    decay_style: str
    num_iters: int = 0

    def __post_init__(self) -> None:
        if self.decay_style not in DECAY_STYLES:
            raise ValueError(
                f"lr_decay_style {self.decay_style!r} unknown; expected one of {DECAY_STYLES}"
            )
        if self.end_iter <= 0:
            raise ValueError(f"lr_decay_iters must be positive, got {self.end_iter}")

    @property
    def lr(self) -> float:
        return lr_at(
            self.num_iters,
            start_lr=self.start_lr,
            min_lr=self.min_lr,
            warmup_iter=self.warmup_iter,
            end_iter=self.end_iter,
            decay_style=self.decay_style,
        )

    def apply(self, optimizer: Any) -> float:
        lr = self.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self, optimizer: Any) -> float:
        self.num_iters += 1
        return self.apply(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Resume at the checkpoint's step count; the shape of the schedule is the config's.

        Only `num_iters` is taken (our `use_checkpoint_lr_scheduler` is always false), so a
        changed `lr`/`min_lr`/`warmup`/`lr_decay_iters`/`lr_decay_style` applies on resume.
        Returns `"<field> <checkpoint> -> <config>"` for each field that differs, for the log.
        """
        changed = [
            f"{key} {state[key]!r} -> {getattr(self, key)!r}"
            for key in SHAPE_FIELDS
            if key in state and state[key] != getattr(self, key)
        ]
        self.num_iters = int(state["num_iters"])
        return changed


def build_schedule(
    *,
    lr: float,
    min_lr: float,
    warmup: float,
    lr_decay_iters: int | None,
    train_iters: int,
    decay_style: str,
) -> AnnealingSchedule:
    """GPT-NeoX's construction: decay over `lr_decay_iters` (or `train_iters`), warmup a fraction."""
    end_iter = max(1, lr_decay_iters if lr_decay_iters is not None else train_iters)
    return AnnealingSchedule(
        start_lr=lr,
        min_lr=min_lr,
        warmup_iter=warmup * end_iter,
        end_iter=end_iter,
        decay_style=decay_style,
    )
