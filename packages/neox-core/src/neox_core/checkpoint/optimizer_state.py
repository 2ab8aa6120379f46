"""A torch optimizer's state as named tensors + JSON, keyed by parameter name (not index).

Keying by name lets a tool re-split optimizer moments with the same shard metadata as the
weights, and lets loading check that the checkpoint belongs to this model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

SEPARATOR = "::"


def _json_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def optimizer_type(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's class name as checkpoints record it: the torch.optim class it derives
    from, so that neox-kernels' FusedAdamW (AdamW's state layout, a faster step) writes and
    reads "AdamW" and its checkpoints load with either class."""
    for cls in type(optimizer).__mro__:
        if cls is not torch.optim.Optimizer and cls.__module__.startswith("torch.optim."):
            return cls.__name__
    return type(optimizer).__name__


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, names: Mapping[int, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer`'s state into tensors named `<param>::<key>` and JSON metadata.

    `names` maps `id(parameter)` to the parameter's name in the model.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    groups = []
    for group in optimizer.param_groups:
        hyper = {k: _json_value(v) for k, v in group.items() if k != "params"}
        group_names = []
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError("optimizer holds a parameter that is not in the model")
            name = names[id(p)]
            group_names.append(name)
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}{SEPARATOR}{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars.setdefault(name, {})[key] = _json_value(value)
        groups.append({"hyper": hyper, "params": group_names})
    meta = {"type": optimizer_type(optimizer), "param_groups": groups, "scalar_state": scalars}
    return tensors, meta


def load_optimizer_from_tensors(
    optimizer: torch.optim.Optimizer,
    names: Mapping[int, str],
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    source: str = "checkpoint",
) -> None:
    """Restore state saved by `optimizer_to_tensors` into an optimizer over the same params."""
    if meta.get("type") != optimizer_type(optimizer):
        raise ValueError(
            f"{source}: optimizer type {meta.get('type')!r} does not match "
            f"{optimizer_type(optimizer)!r}"
        )
    saved_groups = meta["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"{source}: {len(saved_groups)} parameter groups saved, optimizer has "
            f"{len(optimizer.param_groups)}"
        )
    index_of: dict[str, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            index_of[names[id(p)]] = len(index_of)
    state: dict[int, dict[str, Any]] = {}
    out_groups = []
    for g, (saved, current) in enumerate(zip(saved_groups, optimizer.param_groups, strict=True)):
        current_names = [names[id(p)] for p in current["params"]]
        if sorted(saved["params"]) != sorted(current_names):
            missing = set(current_names) - set(saved["params"])
            extra = set(saved["params"]) - set(current_names)
            raise ValueError(
                f"{source}: parameter group {g} differs: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(extra)[:5]}"
            )
        hyper = dict(saved["hyper"])
        for key, value in list(hyper.items()):
            if isinstance(value, list) and isinstance(current.get(key), tuple):
                hyper[key] = tuple(value)
        out_groups.append({**hyper, "params": [index_of[n] for n in saved["params"]]})
    for key, tensor in tensors.items():
        name, _, field = key.rpartition(SEPARATOR)
        if name not in index_of:
            raise ValueError(f"{source}: optimizer state for unknown parameter {name!r}")
        state.setdefault(index_of[name], {})[field] = tensor
    for name, fields in meta.get("scalar_state", {}).items():
        state.setdefault(index_of[name], {}).update(fields)
    optimizer.load_state_dict({"state": state, "param_groups": out_groups})
