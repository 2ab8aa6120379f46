"""Names inside a checkpoint directory (format v3, see docs/formats/checkpoint.md)."""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FORMAT_NAME = "neox-checkpoint"
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)

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


def tensor_file_metadata(
    iteration: int, shards: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, str]:
    """The safetensors header metadata of every tensor file; `shards` maps name -> record."""
    meta = {
        "format": "pt",
        "neox_format": FORMAT_NAME,
        "neox_format_version": str(FORMAT_VERSION),
        "neox_iteration": str(iteration),
    }
    if shards is not None:
        meta["neox_shards"] = json.dumps(shards, sort_keys=True)
    return meta


def manifest_record(
    iteration: int,
    *,
    parallel: Mapping[str, int],
    contents: Mapping[str, bool],
    files: Mapping[str, Mapping[str, Any]],
    versions: Mapping[str, str],
) -> dict[str, Any]:
    """`manifest.json`: what the directory holds, so readers can check it before loading."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "iteration": iteration,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **versions,
        "parallel": dict(parallel),
        "contents": dict(contents),
        "files": {name: dict(rec) for name, rec in files.items()},
    }
