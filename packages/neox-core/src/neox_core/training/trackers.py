"""TensorBoard and Weights & Biases, each imported only when configured."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


class Trackers:
    """Scalar sinks of rank 0; a no-op when neither TensorBoard nor W&B is configured."""

    def __init__(
        self,
        *,
        tensorboard_dir: str | None,
        use_wandb: bool,
        wandb_project: str,
        wandb_group: str | None,
        wandb_team: str | None,
        wandb_mode: str,
        config: Mapping[str, Any] | None = None,
        rank: int = 0,
    ) -> None:
        self._tb: Any = None
        self._wandb: Any = None
        if rank != 0:
            return
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=tensorboard_dir)
        if use_wandb and wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(
                project=wandb_project,
                group=wandb_group,
                entity=wandb_team,
                mode=wandb_mode,
                config=dict(config or {}),
                reinit=True,
            )

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(dict(scalars), step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
