"""Write a checkpoint (format v3) so that a crash at any moment leaves `latest` valid.

Order: every file goes into `<save>/.tmp-global_step<N>-<pid>/` and is fsynced; the directory
is fsynced and renamed to `global_step<N>`; only then is `latest` replaced (temp file, fsync,
rename). A reader that follows `latest` therefore never sees a partial checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neox_core.checkpoint import layout
from neox_core.checkpoint.atomic import fsync_dir, remove_tree, write_json, write_text
from neox_core.checkpoint.hashing import (
    write_bytes_hashed,
    write_json_hashed,
    write_safetensors_hashed,
)
from neox_core.checkpoint.optimizer_state import optimizer_to_tensors
from neox_core.checkpoint.rng import RngState, capture_rng_state
from neox_core.checkpoint.sharding import shard_infos


@dataclass(frozen=True)
class Ranks:
    """This process's place in the parallel layout (all zeros/ones on one device)."""

    tp_rank: int = 0
    tp_world_size: int = 1
    pp_stage: int = 0
    pp_world_size: int = 1
    dp_rank: int = 0
    dp_world_size: int = 1
    global_rank: int = 0


SINGLE_DEVICE = Ranks()


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU contiguous tensors; any that share storage (tied weights) get their own copy."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]
) -> dict[str, Any]:
    """Write and fsync a safetensors file; its manifest record (size, hash taken in passing)."""
    return write_safetensors_hashed(path, tensors, meta)


def _json_dump(path: Path, obj: Any) -> dict[str, Any]:
    return write_json_hashed(path, obj)


def _text_dump(path: Path, text: str) -> dict[str, Any]:
    return write_bytes_hashed(path, text.encode("utf-8"))


def save_checkpoint(
    save_dir: str | Path,
    iteration: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    config_files: Mapping[str, str] | None = None,
    ranks: Ranks = SINGLE_DEVICE,
    split_dims: Mapping[str, int | None] | None = None,
    tp_blocks: Mapping[str, Sequence[int]] | None = None,
    save_rng: bool = True,
    rng_states: Mapping[int, RngState] | None = None,
) -> Path:
    """Write `<save_dir>/global_step<iteration>/` and point `latest` at it; return its path.

    `trainer_state` holds the loop's JSON-able state (scheduler, loss scaler, data position,
    counters); `config` the resolved config as a plain dict; `config_files` maps file names
    to the text of the YAML files the run was started with. `rng_states` maps global ranks to
    their `capture_rng_state`, gathered by the saving rank in a multi-process run (each rank
    gets its own `rng_rank<R>`); by default this process's state is saved as its own rank's.
    """
    root = Path(save_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / layout.step_dir_name(iteration)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    remove_tree(tmp)
    tmp.mkdir()
    try:
        _write_contents(
            tmp,
            iteration,
            model,
            optimizer,
            trainer_state,
            config,
            config_files,
            ranks,
            split_dims,
            tp_blocks,
            save_rng,
            rng_states,
        )
        fsync_dir(tmp)
        publish_step_dir(root, tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    write_text(root / layout.LATEST_FILE, final.name + "\n")
    return final


def publish_step_dir(root: Path, tmp: Path, final: Path) -> None:
    """Rename the complete temp directory `tmp` to the step directory `final`, replacing a step
    saved before (a rerun into the same directory) without `latest` ever naming a missing one."""
    if final.exists():
        _unpoint_latest(root, final.name)
        stale = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        os.replace(tmp, final)
        remove_tree(stale)
    else:
        os.replace(tmp, final)
    fsync_dir(root)


def _unpoint_latest(root: Path, name: str) -> None:
    """Before replacing the directory `latest` names, point `latest` at another complete one
    (or remove it), so no crash in between leaves it naming a missing directory."""
    latest = root / layout.LATEST_FILE
    if not latest.is_file() or latest.read_text(encoding="utf-8").strip() != name:
        return
    others = [
        p
        for _, p in layout.list_step_dirs(root)
        if p.name != name and (p / layout.MANIFEST_FILE).is_file()
    ]
    if others:
        write_text(latest, others[-1].name + "\n")
    else:
        latest.unlink()
        fsync_dir(root)


def _write_contents(
    out: Path,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    config_files: Mapping[str, str] | None,
    ranks: Ranks,
    split_dims: Mapping[str, int | None] | None,
    tp_blocks: Mapping[str, Sequence[int]] | None,
    save_rng: bool,
    rng_states: Mapping[int, RngState] | None,
) -> None:
    files: dict[str, dict[str, Any]] = {}
    weights = _unshared(model.state_dict())
    param_names = {name for name, _ in model.named_parameters()}
    dims = {n: None for n in weights if n not in param_names}  # buffers are replicated
    dims.update(split_dims or {})
    infos = shard_infos(
        {n: tuple(t.shape) for n, t in weights.items()},
        tp_rank=ranks.tp_rank,
        tp_world_size=ranks.tp_world_size,
        pp_stage=ranks.pp_stage,
        pp_world_size=ranks.pp_world_size,
        split_dims=dims,
        tp_blocks=tp_blocks,
    )
    base_meta = layout.tensor_file_metadata(iteration)
    name = layout.model_file(ranks.tp_rank, ranks.pp_stage)
    files[name] = _save_tensors(
        out / name,
        weights,
        layout.tensor_file_metadata(iteration, {n: i.to_json() for n, i in infos.items()}),
    )

    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        tensors, meta = optimizer_to_tensors(optimizer, names)
        opt_shards = {}
        for key, t in tensors.items():
            pname, _, _field = key.rpartition("::")
            info = infos.get(pname)
            if info is not None and tuple(t.shape) == tuple(weights[pname].shape):
                opt_shards[key] = info.to_json()
        tfile, jfile = layout.optimizer_files(ranks.tp_rank, ranks.pp_stage, ranks.dp_rank)
        opt_meta = layout.tensor_file_metadata(iteration, opt_shards)
        files[tfile] = _save_tensors(out / tfile, tensors, opt_meta)
        files[jfile] = _json_dump(out / jfile, meta)

    if save_rng:
        for rank, (rng_tensors, rng_meta) in sorted(
            (rng_states or {ranks.global_rank: capture_rng_state()}).items()
        ):
            tfile, jfile = layout.rng_files(rank)
            files[tfile] = _save_tensors(out / tfile, rng_tensors, base_meta)
            files[jfile] = _json_dump(out / jfile, rng_meta)

    if ranks.global_rank == 0:
        files.update(write_shared_files(out, trainer_state, config, config_files))

    manifest = layout.manifest_record(
        iteration,
        parallel={
            "tensor_parallel_size": ranks.tp_world_size,
            "pipe_parallel_size": ranks.pp_world_size,
            "data_parallel_size": ranks.dp_world_size,
        },
        contents={
            "weights": True,
            "optimizer": optimizer is not None,
            "rng": save_rng,
            "trainer_state": ranks.global_rank == 0,
        },
        files=dict(sorted(files.items())),
        versions={"neox_core_version": _version()},
    )
    write_json(out / layout.MANIFEST_FILE, manifest)


def write_shared_files(
    out: Path,
    trainer_state: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    config_files: Mapping[str, str] | None,
) -> dict[str, dict[str, Any]]:
    """Rank 0's files (trainer state, resolved config, the YAML files); their records."""
    files = {
        layout.TRAINER_STATE_FILE: _json_dump(
            out / layout.TRAINER_STATE_FILE, dict(trainer_state or {})
        )
    }
    if config is not None:
        files[layout.CONFIG_FILE] = _json_dump(out / layout.CONFIG_FILE, dict(config))
    if config_files:
        (out / layout.CONFIGS_DIR).mkdir()
        for fname, text in config_files.items():
            rel = f"{layout.CONFIGS_DIR}/{Path(fname).name}"
            files[rel] = _text_dump(out / rel, text)
        fsync_dir(out / layout.CONFIGS_DIR)
    return files


def _version() -> str:
    from neox_core import __version__

    return __version__
