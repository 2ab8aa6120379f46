"""Index every stored piece of a checkpoint's tensor files, then copy any region out of them.

A loader asks for "tensor X, the canonical indices this rank holds" and gets exactly those
values, whatever TP/DP layout wrote the files: each overlapping piece is read with
safetensors' `get_slice` (only the bounding box of the overlap leaves the file), then
scattered into place. A coverage mask proves every element came from the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from neox_core.checkpoint.placement import Region, chunk_region, index_grid, overlap
from neox_core.checkpoint.sharding import ShardInfo


class PieceError(ValueError):
    """A stored tensor has no usable record, or the pieces do not cover what is asked."""


@dataclass(frozen=True)
class Piece:
    file: Path
    key: str  # the tensor's name inside `file`
    info: ShardInfo
    region: Region
    dtype: str


def _parse_record(raw: Any, shape: tuple[int, ...], where: str) -> tuple[ShardInfo, Region]:
    if raw is None:  # v1: a tensor without record is whole (optimizer `step`, odd shapes)
        info = ShardInfo(None, 0, 1, 0, 1, shape, None)
        return info, chunk_region(info, None, None)
    try:
        info = ShardInfo.from_json(raw)
        offset, cshape = raw.get("chunk_offset"), raw.get("chunk_shape")
        region = chunk_region(info, offset, cshape)
    except (ValueError, TypeError) as e:
        raise PieceError(f"{where}: bad shard record ({e})") from None
    if region.shape != shape:
        raise PieceError(f"{where}: stored shape {list(shape)}, its record implies {region.shape}")
    return info, region


class PieceIndex:
    """Every piece of every tensor in a set of safetensors files, by tensor name."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.pieces: dict[str, list[Piece]] = {}
        self._handles: dict[Path, Any] = {}
        for path in sorted(files):
            f = safe_open(str(path), framework="pt")
            self._handles[path] = f
            try:
                records = json.loads((f.metadata() or {}).get("neox_shards", "{}"))
            except json.JSONDecodeError as e:
                raise PieceError(f"{path}: neox_shards metadata is not JSON ({e})") from None
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                sl = f.get_slice(key)
                shape = tuple(int(x) for x in sl.get_shape())
                info, region = _parse_record(records.get(key), shape, f"{path}: {key}")
                if info.tp_dim is None and info.tp_rank != 0 and info.tp_world_size > 1:
                    continue  # a replica of what TP rank 0's file holds (v1 weights)
                self.pieces.setdefault(key, []).append(
                    Piece(path, key, info, region, sl.get_dtype())
                )

    def names(self) -> set[str]:
        return set(self.pieces)

    def full_shape(self, name: str) -> tuple[int, ...]:
        return self.pieces[name][0].info.full_shape

    def read(
        self,
        name: str,
        target: Region,
        full_shape: tuple[int, ...],
        out: torch.Tensor,
        where: str,
    ) -> None:
        """Fill `out` (laid out as `target` in a tensor of `full_shape`) with the stored values
        of tensor `name`."""
        pieces = self.pieces.get(name)
        if not pieces:
            raise PieceError(f"{where}: no tensor {name!r}")
        if out.ndim == 0:
            out.copy_(self._handles[pieces[0].file].get_tensor(name))
            return
        covered = torch.zeros(out.shape, dtype=torch.bool)
        for p in pieces:
            if p.info.full_shape != tuple(full_shape):
                raise PieceError(
                    f"{where}: {name} is {list(p.info.full_shape)} in {p.file.name}, the model "
                    f"expects {list(full_shape)}"
                )
            hit = overlap(target, p.region)
            if hit is None:
                continue
            tpos, spos = hit
            bounds = tuple(slice(int(s.min()), int(s.max()) + 1) for s in spos)
            block = self._handles[p.file].get_slice(p.key)[bounds]
            rel = [s - b.start for s, b in zip(spos, bounds, strict=True)]
            tidx = index_grid(tpos)
            out[tidx] = block[index_grid(rel)].to(out.dtype)
            covered[tidx] = True
        if not bool(covered.all()):
            raise PieceError(
                f"{where}: the stored pieces of {name} cover {int(covered.sum())} of "
                f"{covered.numel()} elements this rank needs"
            )
