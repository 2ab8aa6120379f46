"""The checkpoint errors, in a module of their own so every reader and writer can raise them."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, of an unknown version or does not fit the model."""


class DamagedCheckpointError(CheckpointError):
    """A file of a checkpoint is missing, truncated or not what the manifest recorded.

    Kept apart from other errors so a resume can say which older step is still usable.
    """

    def __init__(self, ckpt: Path, problems: list[tuple[str, str]]) -> None:
        self.ckpt = Path(ckpt)
        self.problems = problems
        first_file, why = problems[0]
        more = f" (and {len(problems) - 1} more damaged file(s))" if len(problems) > 1 else ""
        super().__init__(f"{self.ckpt / first_file}: {why}{more}")

    @property
    def file(self) -> Path:
        return self.ckpt / self.problems[0][0]
