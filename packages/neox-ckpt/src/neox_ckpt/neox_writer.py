"""Write neox checkpoint format v3 (docs/formats/checkpoint.md) from a stream of full tensors.

Each full tensor arrives once, is cut into its tensor-parallel pieces and written into the
`model_tp<TT>_pp<PP>.safetensors` files of the stages that hold it, at offsets planned from the
shapes up front, so only one tensor (and its pieces) is in memory at a time. Shard metadata,
manifest and `latest` are the format's; the checkpoint holds weights only (finetune start).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neox_ckpt import pipeline, tp_split
from neox_ckpt.errors import ConversionError
from neox_ckpt.progress import progress
from neox_ckpt.safetensors_stream import SafetensorsWriter


@dataclass(frozen=True)
class PlannedTensor:
    """A full tensor of the model and how the format splits it."""

    name: str
    dtype: torch.dtype
    full_shape: tuple[int, ...]
    tp_dim: int | None
    tp_blocks: tuple[int, ...] | None = None


def _versions() -> dict[str, str]:
    from neox_ckpt import __version__ as ckpt_version
    from neox_core import __version__ as core_version

    return {"neox_core_version": core_version, "neox_ckpt_version": ckpt_version}


def write_checkpoint(
    save_dir: Path,
    iteration: int,
    plan: list[PlannedTensor],
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    tp: int,
    pp: int,
    config: Mapping[str, Any] | None = None,
    config_files: Mapping[str, str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    desc: str = "writing neox checkpoint",
) -> Path:
    """Write `<save_dir>/global_step<iteration>/` and `latest`; `tensors` yields (name, full).

    `save_dir` is expected to be a staged (temporary) directory: files are written in place.
    """
    from neox_core.checkpoint import layout

    if tp < 1 or pp < 1:
        raise ConversionError(f"--tp and --pp must be at least 1 (got {tp}, {pp})")
    step = save_dir / layout.step_dir_name(iteration)
    step.mkdir(parents=True)
    names = [p.name for p in plan]
    num_layers = pipeline.num_layers_of(names)
    if pp > max(num_layers, 1):
        raise ConversionError(f"--pp {pp} exceeds the model's {num_layers} layers")
    tied = "lm_head.weight" not in names
    by_name = {p.name: p for p in plan}
    stages = {p.name: pipeline.stages_of(p.name, num_layers, pp, tied) for p in plan}

    files: dict[tuple[int, int], list[PlannedTensor]] = {
        (r, s): [] for s in range(pp) for r in range(tp)
    }
    for p in plan:
        for s in stages[p.name]:
            for r in range(tp):
                files[(r, s)].append(p)
    writers: dict[tuple[int, int], SafetensorsWriter] = {}
    try:
        for (r, s), entries in files.items():
            shards = {
                p.name: {
                    "tp_dim": p.tp_dim,
                    "tp_rank": r,
                    "tp_world_size": tp,
                    "pp_stage": s,
                    "pp_world_size": pp,
                    "full_shape": list(p.full_shape),
                    "tp_blocks": None if p.tp_blocks is None else list(p.tp_blocks),
                }
                for p in entries
            }
            meta = layout.tensor_file_metadata(iteration, shards)
            planned = [
                (p.name, p.dtype, tp_split.piece_shape(p.full_shape, p.tp_dim, tp, p.name))
                for p in entries
            ]
            writers[(r, s)] = SafetensorsWriter(
                step / layout.model_file(r, s), planned, metadata=meta
            )
        seen: set[str] = set()
        for name, full in progress(tensors, total=len(plan), desc=desc, unit="tensor"):
            p = by_name.get(name)
            if p is None:
                raise ConversionError(f"tensor {name!r} was not planned")
            if tuple(full.shape) != p.full_shape:
                raise ConversionError(f"{name}: shape {tuple(full.shape)}, planned {p.full_shape}")
            pieces = tp_split.split(full.to(p.dtype), p.tp_dim, tp, p.tp_blocks, where=name)
            for s in stages[name]:
                for r in range(tp):
                    writers[(r, s)].write(name, pieces[r])
            seen.add(name)
            del pieces, full
        missing = [n for n in names if n not in seen]
        if missing:
            raise ConversionError(f"tensors planned but never produced: {missing[:5]}")
        records = {layout.model_file(r, s): w.close() for (r, s), w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise

    from neox_core.checkpoint.hashing import write_bytes_hashed

    if config is not None:
        text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
        records[layout.CONFIG_FILE] = write_bytes_hashed(
            step / layout.CONFIG_FILE, text.encode("utf-8")
        )
    for fname, text in (config_files or {}).items():
        rel = f"{layout.CONFIGS_DIR}/{Path(fname).name}"
        (step / layout.CONFIGS_DIR).mkdir(exist_ok=True)
        records[rel] = write_bytes_hashed(step / rel, text.encode("utf-8"))
    for rel, data in (extra_files or {}).items():
        (step / rel).parent.mkdir(parents=True, exist_ok=True)
        records[rel] = write_bytes_hashed(step / rel, data)
    manifest = layout.manifest_record(
        iteration,
        parallel={"tensor_parallel_size": tp, "pipe_parallel_size": pp, "data_parallel_size": 1},
        contents={"weights": True, "optimizer": False, "rng": False, "trainer_state": False},
        files=dict(sorted(records.items())),
        versions=_versions(),
    )
    (step / layout.MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (save_dir / layout.LATEST_FILE).write_text(step.name + "\n", encoding="utf-8")
    return step
