"""Which iterations to save at, and which old checkpoints to delete."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from neox_core.checkpoint import layout
from neox_core.checkpoint.atomic import remove_tree


def is_save_iteration(
    iteration: int, checkpoint_factor: int | None, extra_save_iters: Sequence[int] | None
) -> bool:
    """GPT-NeoX's rule (linear checkpoint scale): every `checkpoint_factor` steps plus extras."""
    if extra_save_iters and iteration in extra_save_iters:
        return True
    return bool(checkpoint_factor) and iteration % int(checkpoint_factor) == 0  # type: ignore[operator]


DEBRIS_PATTERNS = (".tmp-global_step*", ".old-global_step*")  # see save.save_checkpoint


def remove_save_debris(save_dir: str | Path) -> list[Path]:
    """Remove what interrupted saves left: `.tmp-`/`.old-global_step<N>-<pid>` directories.

    Those named with this process's pid are skipped: they may belong to a save in progress.
    """
    root = Path(save_dir)
    own = f"-{os.getpid()}"
    debris = sorted(
        p
        for pattern in DEBRIS_PATTERNS
        for p in root.glob(pattern)
        if p.is_dir() and not p.name.endswith(own)
    )
    for p in debris:
        remove_tree(p)
    return debris


def delete_old_checkpoints(save_dir: str | Path, keep_last_n: int | None) -> list[Path]:
    """Delete all but the newest `keep_last_n` `global_step<N>` dirs; never the `latest` one.

    Debris of interrupted saves goes too, whether or not `keep_last_n` is set.
    """
    if keep_last_n is not None and keep_last_n < 1:
        raise ValueError(f"keep_last_n_checkpoints must be >= 1, got {keep_last_n}")
    root = Path(save_dir)
    remove_save_debris(root)
    if keep_last_n is None:
        return []
    latest_file = root / layout.LATEST_FILE
    latest = latest_file.read_text().strip() if latest_file.is_file() else None
    steps = layout.list_step_dirs(root)
    doomed = [p for _, p in steps[: max(0, len(steps) - keep_last_n)] if p.name != latest]
    for p in doomed:
        remove_tree(p)
    return doomed
