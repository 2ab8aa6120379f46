"""What a run carries between steps and across a resume (saved as trainer_state.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    iteration: int = 0
    skipped_iterations: int = 0
    nan_iterations: int = 0
    train_samples_consumed: int = 0  # per data-parallel group: iteration x train_batch_size
    valid_samples_consumed: int = 0
    last_saved: int | None = None

    def to_trainer_state(self, scheduler: dict[str, Any], loss_scaler: dict[str, Any] | None):
        return {
            "iteration": self.iteration,
            "scheduler": scheduler,
            "loss_scaler": loss_scaler,
            "data": {
                "train_samples_consumed": self.train_samples_consumed,
                "valid_samples_consumed": self.valid_samples_consumed,
            },
            "counters": {
                "skipped_iterations": self.skipped_iterations,
                "nan_iterations": self.nan_iterations,
            },
        }

    @classmethod
    def from_trainer_state(cls, iteration: int, state: dict[str, Any]) -> Progress:
        data = state.get("data", {})
        counters = state.get("counters", {})
        return cls(
            iteration=iteration,
            skipped_iterations=int(counters.get("skipped_iterations", 0)),
            nan_iterations=int(counters.get("nan_iterations", 0)),
            train_samples_consumed=int(data.get("train_samples_consumed", 0)),
            valid_samples_consumed=int(data.get("valid_samples_consumed", 0)),
            last_saved=iteration,
        )


@dataclass
class IntervalStats:
    """Loss sums and counts between two log lines (GPT-NeoX's `total_loss_dict`)."""

    loss_sum: float = 0.0
    iterations: int = 0  # since the last log line (fewer than log_interval after a resume)
    applied: int = 0
    skipped: int = 0
    nan: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        self.loss_sum, self.iterations, self.applied, self.skipped, self.nan = 0.0, 0, 0, 0, 0
