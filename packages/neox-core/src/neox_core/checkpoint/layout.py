"""Names inside a checkpoint directory (format v1, see docs/formats/checkpoint.md)."""

from __future__ import annotations

import re
from pathlib import Path

FORMAT_NAME = "neox-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

LATEST_FILE = "latest"
MANIFEST_FILE = "manifest.json"
TRAINER_STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"
CONFIGS_DIR = "configs"

_STEP_DIR = re.compile(r"^global_step(\d+)$")


def step_dir_name(iteration: int) -> str:
    return f"global_step{iteration}"


def step_of(path: str | Path) -> int | None:
    """The iteration of a `global_step<N>` directory name, else None."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def model_file(tp_rank: int = 0, pp_stage: int = 0) -> str:
    return f"model_tp{tp_rank:02d}_pp{pp_stage:02d}.safetensors"


def optimizer_files(tp_rank: int = 0, pp_stage: int = 0, dp_rank: int = 0) -> tuple[str, str]:
    stem = f"optimizer_tp{tp_rank:02d}_pp{pp_stage:02d}_dp{dp_rank:03d}"
    return f"{stem}.safetensors", f"{stem}.json"


def rng_files(rank: int = 0) -> tuple[str, str]:
    stem = f"rng_rank{rank:05d}"
    return f"{stem}.safetensors", f"{stem}.json"


def list_step_dirs(save_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every complete-looking `global_step<N>` directory, oldest first."""
    root = Path(save_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        step = step_of(p)
        if step is not None and p.is_dir():
            found.append((step, p))
    return sorted(found)
