"""Read a checkpoint (format v1-v3): find it, check it is complete, restore what was asked.

Only safetensors and JSON are read, so loading never runs pickled code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from neox_core.checkpoint import layout
from neox_core.checkpoint.errors import CheckpointError, DamagedCheckpointError
from neox_core.checkpoint.integrity import file_problems
from neox_core.checkpoint.optimizer_state import load_optimizer_from_tensors
from neox_core.checkpoint.rng import restore_rng_state
from neox_core.checkpoint.save import SINGLE_DEVICE, Ranks
from neox_core.checkpoint.sharding import ShardInfo


@dataclass
class LoadedCheckpoint:
    path: Path
    iteration: int
    manifest: dict[str, Any]
    trainer_state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None


def resolve_checkpoint_dir(load_dir: str | Path, iteration: int | None = None) -> Path:
    """`global_step<iteration>` if given, else the directory named in `<load_dir>/latest`."""
    root = Path(load_dir)
    if iteration is not None:
        path = root / layout.step_dir_name(iteration)
        if not path.is_dir():
            available = [s for s, _ in layout.list_step_dirs(root)]
            raise CheckpointError(
                f"no checkpoint for iteration {iteration} in {root}; available: {available}"
            )
        return path
    latest = root / layout.LATEST_FILE
    if not latest.is_file():
        raise CheckpointError(f"{latest} does not exist: no checkpoint to load in {root}")
    name = latest.read_text(encoding="utf-8").strip()
    if layout.step_of(name) is None:
        raise CheckpointError(f"{latest}: expected 'global_step<N>', found {name!r}")
    path = root / name
    if not path.is_dir():
        raise CheckpointError(f"{latest} names {name}, which does not exist in {root}")
    return path


def read_manifest(ckpt_dir: str | Path, verify: str = "size") -> dict[str, Any]:
    """The manifest, after checking format, version and that every listed file is whole.

    Sizes and safetensors headers are always checked; `verify="hash"` also compares every
    file's content hash with the manifest's (v3). A damaged file raises
    `DamagedCheckpointError` naming it.
    """
    ckpt = Path(ckpt_dir)
    mpath = ckpt / layout.MANIFEST_FILE
    if not mpath.is_file():
        raise CheckpointError(f"{mpath} missing: {ckpt} is not a complete neox checkpoint")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mpath}: not valid JSON ({e})") from None
    if manifest.get("format") != layout.FORMAT_NAME:
        raise CheckpointError(f"{mpath}: format {manifest.get('format')!r} is not neox's")
    version = manifest.get("format_version")
    if version not in layout.SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{mpath}: format_version {version} unsupported (this reader knows "
            f"{list(layout.SUPPORTED_VERSIONS)})"
        )
    problems = file_problems(ckpt, manifest, hashes=verify == "hash")
    if problems:
        raise DamagedCheckpointError(ckpt, problems)
    return manifest


def newest_usable_step(
    load_dir: str | Path, older_than: int | None = None, verify: str = "hash"
) -> Path | None:
    """The newest `global_step<N>` (N < `older_than`) that is complete and verifies, so an
    error about a damaged step can name what the user could load instead."""
    for step, path in reversed(layout.list_step_dirs(load_dir)):
        if older_than is not None and step >= older_than:
            continue
        try:
            read_manifest(path, verify)
        except CheckpointError:
            continue
        return path
    return None


def read_shard_infos(path: str | Path) -> dict[str, ShardInfo]:
    """The per-tensor split metadata stored in a weights or optimizer safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    raw = json.loads(meta.get("neox_shards", "{}"))
    return {name: ShardInfo.from_json(d) for name, d in raw.items()}


def load_model_weights(
    ckpt_dir: str | Path, ranks: Ranks = SINGLE_DEVICE
) -> dict[str, torch.Tensor]:
    path = Path(ckpt_dir) / layout.model_file(ranks.tp_rank, ranks.pp_stage)
    if not path.is_file():
        raise CheckpointError(f"{path} missing (tp rank {ranks.tp_rank}, pp {ranks.pp_stage})")
    return load_file(str(path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} missing") from None


def load_checkpoint(
    load_dir: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    iteration: int | None = None,
    weights_only: bool = False,
    restore_rng: bool = True,
    ranks: Ranks = SINGLE_DEVICE,
    verify: str = "hash",
) -> LoadedCheckpoint:
    """Load weights into `model` and, unless `weights_only`, optimizer, RNG and trainer state.

    With `weights_only` (GPT-NeoX's `finetune: true`) the returned iteration is 0. Every file
    is checked against the manifest first (`verify`: "hash" or "size", see `read_manifest`).
    """
    ckpt = resolve_checkpoint_dir(load_dir, iteration)
    manifest = read_manifest(ckpt, verify)
    weights = load_model_weights(ckpt, ranks)
    current = model.state_dict()
    missing = [n for n in current if n not in weights]
    unexpected = [n for n in weights if n not in current]
    wrong = [
        f"{n} {tuple(weights[n].shape)} vs {tuple(t.shape)}"
        for n, t in current.items()
        if n in weights and weights[n].shape != t.shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{ckpt}: weights do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape (checkpoint vs model) {wrong[:5]}"
        )
    model.load_state_dict(weights)
    loaded = LoadedCheckpoint(ckpt, int(manifest["iteration"]), manifest)
    config_path = ckpt / layout.CONFIG_FILE
    if config_path.is_file():
        loaded.config = _read_json(config_path)
    if weights_only:
        loaded.iteration = 0
        return loaded

    if optimizer is not None:
        if not manifest["contents"].get("optimizer"):
            raise CheckpointError(f"{ckpt} holds no optimizer state; use finetune to load it")
        tfile, jfile = layout.optimizer_files(ranks.tp_rank, ranks.pp_stage, ranks.dp_rank)
        names = {id(p): n for n, p in model.named_parameters()}
        load_optimizer_from_tensors(
            optimizer, names, load_file(str(ckpt / tfile)), _read_json(ckpt / jfile), str(ckpt)
        )
    if restore_rng and manifest["contents"].get("rng"):
        tfile, jfile = layout.rng_files(ranks.global_rank)
        if not (ckpt / tfile).is_file():
            raise CheckpointError(
                f"{ckpt / tfile} missing: no RNG state for global rank {ranks.global_rank} "
                "(saved by fewer ranks?); load with restore_rng=False to keep the seeded RNG"
            )
        restore_rng_state(load_file(str(ckpt / tfile)), _read_json(ckpt / jfile))
    state_path = ckpt / layout.TRAINER_STATE_FILE
    if state_path.is_file():
        loaded.trainer_state = _read_json(state_path)
    return loaded
