"""Read a neox v1 checkpoint's weights as full tensors, one at a time, from shard metadata.

No model code is involved: each stored piece carries its `tp_dim`, rank, stage and full shape
(docs/formats/checkpoint.md), which is all a merge needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neox_ckpt import tp_split
from neox_ckpt.errors import ConversionError
from neox_ckpt.safetensors_stream import SafetensorsReader

_MODEL_FILE = re.compile(r"^model_tp(\d+)_pp(\d+)\.safetensors$")


@dataclass
class FullTensor:
    name: str
    dtype: torch.dtype
    full_shape: tuple[int, ...]
    tp_dim: int | None
    tp_blocks: tuple[int, ...] | None
    stages: list[int]


def step_dir_in(save_dir: str | Path, iteration: int | None = None) -> Path:
    """`<save_dir>/global_step<iteration>`, or the directory `<save_dir>/latest` names.

    One rule for neox and legacy GPT-NeoX save directories (both write `latest` the same way),
    so an asked-for iteration is never silently swapped for the latest one.
    """
    from neox_core.checkpoint import CheckpointError, resolve_checkpoint_dir, step_dir_name

    try:
        return resolve_checkpoint_dir(save_dir, iteration)
    except CheckpointError as e:
        if iteration is None:
            raise ConversionError(str(e)) from None
        where = Path(save_dir) / step_dir_name(iteration)
        raise ConversionError(f"{where} is not a directory ({e})") from None


def check_step_number(step_dir: Path, iteration: int | None) -> None:
    """A step directory given directly must be the asked-for iteration, if its name says one."""
    from neox_core.checkpoint import layout

    step = layout.step_of(step_dir)
    if iteration is not None and step not in (None, iteration):
        raise ConversionError(f"{step_dir} is iteration {step}, not {iteration}")


def resolve_step_dir(path: str | Path, iteration: int | None = None) -> Path:
    """`path` itself if it is a `global_step<N>` directory, else the one `latest` names."""
    from neox_core.checkpoint import layout

    p = Path(path)
    if not p.exists():
        raise ConversionError(f"{p} does not exist")
    if (p / layout.MANIFEST_FILE).is_file():
        check_step_number(p, iteration)
        return p
    return step_dir_in(p, iteration)


class NeoxCheckpoint:
    """The weights of one `global_step<N>` directory, merged across TP ranks on request."""

    def __init__(self, path: str | Path, iteration: int | None = None) -> None:
        from neox_core.checkpoint import CheckpointError, ShardInfo, read_manifest

        self.dir = resolve_step_dir(path, iteration)
        try:
            self.manifest = read_manifest(self.dir)
        except CheckpointError as e:
            raise ConversionError(str(e)) from None
        self.iteration = int(self.manifest["iteration"])
        self.readers: dict[tuple[int, int], SafetensorsReader] = {}
        self.tensors: dict[str, FullTensor] = {}
        tp_sizes, pp_sizes = set(), set()
        for f in sorted(self.dir.iterdir()):
            m = _MODEL_FILE.match(f.name)
            if not m:
                continue
            rank, stage = int(m.group(1)), int(m.group(2))
            reader = SafetensorsReader(f)
            self.readers[(rank, stage)] = reader
            try:
                shards = json.loads(reader.metadata.get("neox_shards", "{}"))
                infos = {n: ShardInfo.from_json(d) for n, d in shards.items()}
            except (ValueError, TypeError) as e:
                raise ConversionError(f"{f}: bad neox_shards metadata ({e})") from None
            for name, entry in reader.entries.items():
                info = infos.get(name)
                if info is None:
                    raise ConversionError(f"{f}: tensor {name!r} has no shard record")
                if (info.tp_rank, info.pp_stage) != (rank, stage):
                    raise ConversionError(
                        f"{f}: tensor {name!r} is recorded as tp rank {info.tp_rank}, "
                        f"pp stage {info.pp_stage}"
                    )
                expected = tp_split.piece_shape(
                    info.full_shape, info.tp_dim, info.tp_world_size, f"{f}: {name}"
                )
                if expected != entry.shape:
                    raise ConversionError(
                        f"{f}: tensor {name!r} has shape {entry.shape}, its record implies "
                        f"{expected}"
                    )
                tp_sizes.add(info.tp_world_size)
                pp_sizes.add(info.pp_world_size)
                known = self.tensors.get(name)
                if known is None:
                    self.tensors[name] = FullTensor(
                        name, entry.dtype, info.full_shape, info.tp_dim, info.tp_blocks, [stage]
                    )
                elif stage not in known.stages:
                    known.stages.append(stage)
        if not self.readers:
            raise ConversionError(f"{self.dir}: no model_tp*_pp*.safetensors files")
        if len(tp_sizes) > 1 or len(pp_sizes) > 1:
            raise ConversionError(
                f"{self.dir}: files disagree on parallel sizes (tp {tp_sizes}, pp {pp_sizes})"
            )
        self.tp, self.pp = tp_sizes.pop(), pp_sizes.pop()
        missing = [
            (r, s) for r in range(self.tp) for s in range(self.pp) if (r, s) not in self.readers
        ]
        if missing:
            raise ConversionError(f"{self.dir}: missing model files for (tp, pp) {missing}")
        for t in self.tensors.values():
            t.stages.sort()

    def config(self) -> dict[str, Any] | None:
        """The resolved neox config saved with the checkpoint (`config.json`), if any."""
        from neox_core.checkpoint import layout

        path = self.dir / layout.CONFIG_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def read_full(self, name: str) -> torch.Tensor:
        t = self.tensors.get(name)
        if t is None:
            raise ConversionError(f"{self.dir}: no tensor {name!r}")
        stage = t.stages[0]
        pieces = [self.readers[(r, stage)].read(name) for r in range(self.tp)]
        return tp_split.merge(pieces, t.tp_dim, t.tp_blocks, where=f"{self.dir}: {name}")

    def meta(self, name: str) -> torch.Tensor:
        t = self.tensors[name]
        return torch.empty(t.full_shape, dtype=t.dtype, device="meta")
