"""Which iterations to save at, and which old checkpoints to delete."""

from __future__ import annotations

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


def delete_old_checkpoints(save_dir: str | Path, keep_last_n: int | None) -> list[Path]:
    """Delete all but the newest `keep_last_n` `global_step<N>` dirs; never the `latest` one."""
    if keep_last_n is None:
        return []
    if keep_last_n < 1:
        raise ValueError(f"keep_last_n_checkpoints must be >= 1, got {keep_last_n}")
    root = Path(save_dir)
    latest_file = root / layout.LATEST_FILE
    latest = latest_file.read_text().strip() if latest_file.is_file() else None
    steps = layout.list_step_dirs(root)
    doomed = [p for _, p in steps[: max(0, len(steps) - keep_last_n)] if p.name != latest]
    for p in doomed:
        remove_tree(p)
    for stale in root.glob(".tmp-global_step*"):  # leftovers of crashed saves
        remove_tree(stale)
    return doomed
