"""Run neox-core's whole-model name mapping (`hf_names.from_hf` / `to_hf`) one unit at a time.

The mapping functions take a full state dict. To stream, they are called once per unit (each
non-layer tensor alone, then each layer) on a view whose tensors are real for that unit and
empty `meta` tensors for everything else; outputs that are not on the meta device are the
unit's results. Layers are presented as layer 0 of a one-layer config and renamed back, so the
fused-QKV and SwiGLU rules stay in one place (neox-core) and are not rewritten here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from neox_ckpt.pipeline import layer_index

Mapper = Callable[[Mapping[str, torch.Tensor], Any], dict[str, torch.Tensor]]
_LAYER0 = re.compile(r"(^|\.)layers\.0\.")


def _at_layer(name: str, i: int) -> str:
    return _LAYER0.sub(lambda m: f"{m.group(1)}layers.{i}.", name, count=1)


class _View(Mapping[str, torch.Tensor]):
    """Source names; reads the `real` ones (renamed from layer 0 to `layer`), meta otherwise."""

    def __init__(
        self,
        names: list[str],
        read: Callable[[str], torch.Tensor],
        meta: Callable[[str], torch.Tensor],
        real: set[str],
        layer: int | None,
        used: set[str],
    ) -> None:
        self._names, self._set = names, set(names)
        self._read, self._meta, self._real, self._layer = read, meta, real, layer
        self._cache: dict[str, torch.Tensor] = {}
        self._used = used

    def _source(self, key: str) -> str:
        return key if self._layer is None else _at_layer(key, self._layer)

    def __getitem__(self, key: str) -> torch.Tensor:
        src = self._source(key)
        if src not in self._set:
            raise KeyError(key)
        if src not in self._real:
            return self._meta(src)
        if src not in self._cache:
            self._cache[src] = self._read(src)
            self._used.add(src)
        return self._cache[src]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._source(key) in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def plan(
    mapper: Mapper, cfg: Any, names: list[str], meta: Callable[[str], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Output names with meta tensors of their dtype and shape (no data read)."""
    view = _View(names, meta, meta, set(), None, set())
    return mapper(view, cfg)


def stream(
    mapper: Mapper,
    cfg: Any,
    names: list[str],
    read: Callable[[str], torch.Tensor],
    meta: Callable[[str], torch.Tensor],
    used: set[str] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(output name, tensor) for every output, reading one unit of inputs at a time."""
    used = used if used is not None else set()
    flat_cfg = dataclasses.replace(cfg, num_layers=0)
    for name in names:
        if layer_index(name) is None:
            out = mapper(_View(names, read, meta, {name}, None, used), flat_cfg)
            yield from ((k, v) for k, v in out.items() if v.device.type != "meta")
    one_layer = dataclasses.replace(cfg, num_layers=1)
    for i in range(cfg.num_layers):
        real = {n for n in names if layer_index(n) == i}
        out = mapper(_View(names, read, meta, real, i, used), one_layer)
        for k, v in out.items():
            if v.device.type != "meta":
                yield _at_layer(k, i), v
