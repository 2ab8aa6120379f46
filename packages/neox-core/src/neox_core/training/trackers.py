"""TensorBoard and Weights & Biases, each imported only when configured.

Both are dependencies of neox-core, so a GPT-NeoX config that sets `tensorboard_dir` or
`use_wandb` works from a plain install. A sink that cannot start is a `TrackerError` (a
one-line message, before any training step); one that fails mid-run is reported once on stderr
and switched off, and training goes on: losing a dashboard must not lose a run.

W&B's own environment (`WANDB_MODE`, `WANDB_DIR`, `WANDB_API_KEY`, ...) decides whatever the
config leaves unset; `wandb_mode` in the config, when given, wins over `WANDB_MODE`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any


class TrackerError(RuntimeError):
    """TensorBoard or W&B is configured but could not start."""


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
        wandb_mode: str | None = None,
        config: Mapping[str, Any] | None = None,
        rank: int = 0,
    ) -> None:
        self._tb: Any = None
        self._wandb: Any = None
        if rank != 0:
            return
        if tensorboard_dir:
            self._tb = _start_tensorboard(tensorboard_dir)
        if use_wandb and wandb_mode != "disabled":
            try:
                self._wandb = _start_wandb(
                    wandb_project, wandb_group, wandb_team, wandb_mode, config
                )
            except BaseException:
                self.close()
                raise

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        if self._tb is not None:
            try:
                for key, value in scalars.items():
                    self._tb.add_scalar(key, value, step)
            except Exception as exc:  # any sink failure must not stop training
                self._tb = _give_up("TensorBoard", exc, step)
        if self._wandb is not None:
            try:
                self._wandb.log(dict(scalars), step=step)
            except Exception as exc:
                self._wandb = _give_up("W&B", exc, step)

    def close(self) -> None:
        if self._tb is not None:
            try:
                self._tb.flush()
                self._tb.close()
            except Exception as exc:
                _give_up("TensorBoard", exc, None)
            self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as exc:
                _give_up("W&B", exc, None)
            self._wandb = None


def _give_up(name: str, exc: BaseException, step: int | None) -> None:
    when = f"at iteration {step}" if step is not None else "while closing"
    print(
        f"neox-train: warning: {name} failed {when} ({type(exc).__name__}: {exc}); "
        f"{name} logging is off for the rest of this run, training continues",
        file=sys.stderr,
        flush=True,
    )
    return None


def _start_tensorboard(log_dir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise TrackerError(
            f"tensorboard_dir is set but TensorBoard cannot be imported ({exc}); install "
            "neox-core with its dependencies (`uv sync`) or unset tensorboard_dir"
        ) from exc
    try:
        return SummaryWriter(log_dir=log_dir)
    except Exception as exc:
        raise TrackerError(
            f"tensorboard_dir {log_dir}: cannot write TensorBoard logs: {exc}"
        ) from exc


def _start_wandb(
    project: str,
    group: str | None,
    team: str | None,
    mode: str | None,
    config: Mapping[str, Any] | None,
) -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise TrackerError(
            f"use_wandb is true but wandb cannot be imported ({exc}); install neox-core with "
            "its dependencies (`uv sync`) or set use_wandb: false"
        ) from exc
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs: dict[str, Any] = {
        "project": project,
        "group": group,
        "entity": team,
        "config": dict(config or {}),
        "reinit": True,
    }
    if mode is not None:  # unset: WANDB_MODE and the rest of W&B's environment decide
        kwargs["mode"] = mode
    try:
        return wandb.init(**kwargs)
    except Exception as exc:
        env_mode = os.environ.get("WANDB_MODE")
        effective = mode or (f"{env_mode} (WANDB_MODE)" if env_mode else "online (W&B default)")
        raise TrackerError(
            f"use_wandb is true but W&B could not start in mode {effective}: "
            f"{type(exc).__name__}: {exc}. Log in (`wandb login` or WANDB_API_KEY), or run "
            "with WANDB_MODE=offline, or set use_wandb: false"
        ) from exc
