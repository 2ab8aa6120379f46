"""`load_config`: merge GPT-NeoX YAML files, translate, derive, validate."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neox_core.config.derive import derive, pad_vocab_size
from neox_core.config.errors import ConfigError
from neox_core.config.keys import normalise_key
from neox_core.config.schema import GROUPS, NeoxConfig
from neox_core.config.translate import Entry, Translation, coerce, translate
from neox_core.config.validate import validate
from neox_core.config.yaml_loader import load_yaml_file

OVERRIDE = "override"


def _merge(paths: Sequence[str | Path]) -> tuple[dict[str, Entry], dict[str, Any]]:
    merged: dict[str, Entry] = {}
    raw: dict[str, Any] = {}
    for order, path in enumerate(paths):
        parsed = load_yaml_file(path)
        seen_here: dict[str, str] = {}
        for spelled, value in parsed.values.items():
            key = normalise_key(spelled)
            line = parsed.lines[(spelled,)]
            source = f"{parsed.path}:{line}"
            if key in seen_here:
                raise ConfigError(
                    f"{source}: {spelled!r} repeats {seen_here[key]!r} in the same file"
                )
            seen_here[key] = spelled
            nested = {
                path_[1:]: f"{parsed.path}:{ln}"
                for path_, ln in parsed.lines.items()
                if len(path_) > 1 and path_[0] == spelled
            }
            # later files win; blocks such as `optimizer` are replaced whole, as in GPT-NeoX
            merged.pop(key, None)
            merged[key] = Entry(
                value=value, source=source, spelled=spelled, order=order, nested_sources=nested
            )
            raw.pop(key, None)
            raw[key] = copy.deepcopy(value)
    return merged, raw


def _field_names() -> dict[str, set[str]]:
    cfg = NeoxConfig()
    return {g: {f.name for f in dataclasses.fields(getattr(cfg, g))} for g in GROUPS}


def load_config(
    paths: Sequence[str | Path], overrides: Mapping[str, Any] | None = None
) -> NeoxConfig:
    """Merge GPT-NeoX YAML files in order (later wins) into a checked NeoxConfig.

    `overrides` take GPT-NeoX keys ("train_iters") or dotted neox fields
    ("training.train_iters"); they are applied after the files.
    """
    if not paths:
        raise ConfigError("no config files given")
    merged, raw = _merge(paths)
    field_overrides: dict[str, Any] = {}
    fields = _field_names()
    for key, value in (overrides or {}).items():
        if "." in key and key.split(".", 1)[0] in fields:
            group, name = key.split(".", 1)
            if name not in fields[group]:
                raise ConfigError(f"override {key!r}: {group} has no field {name!r}")
            field_overrides[key] = value
            continue
        norm = normalise_key(key)
        merged.pop(norm, None)
        merged[norm] = Entry(value=value, source=OVERRIDE, spelled=key, order=len(paths))
        raw[norm] = copy.deepcopy(value)
    try:
        tr = translate(merged)
        for dotted, value in field_overrides.items():
            tr.set(dotted, _coerce_field(dotted, value), OVERRIDE, dotted)
        cfg = _build(tr)
        cfg.raw = raw
        derive(cfg, tr)
        cfg.ignored = dict(tr.ignored)
        validate(cfg, tr.keys)
    except ConfigError as exc:
        # a key missing from every file has no line to name: name the files searched
        msg = str(exc)
        if any(str(Path(p)) in msg for p in paths) or msg.startswith(OVERRIDE):
            raise
        files = ", ".join(str(Path(p)) for p in paths)
        raise ConfigError(f"{msg} (config files: {files})") from exc
    return cfg


def _coerce_field(dotted: str, value: Any) -> Any:
    """Type-check an override of a dotted field against the field's annotation."""
    group, name = dotted.split(".")
    annotation = next(
        f.type for f in dataclasses.fields(getattr(NeoxConfig(), group)) if f.name == name
    )
    kind = str(annotation).replace(" ", "")
    optional = kind.endswith("|None")
    kind = kind.removesuffix("|None")
    if kind == "tuple[float,float]":
        value = coerce(value, "list[float]", dotted, OVERRIDE)
        if len(value) != 2:
            raise ConfigError(f"{OVERRIDE}: {dotted}: expected two numbers, got {value!r}")
        return tuple(value)
    if kind == "dict[str,Any]" or kind not in _KINDS:
        return value
    return coerce(value, kind + ("?" if optional else ""), dotted, OVERRIDE)


_KINDS = {"int", "float", "bool", "str", "list[str]", "list[float]", "list[int]"}


def _build(tr: Translation) -> NeoxConfig:
    cfg = NeoxConfig()
    for group in GROUPS:
        for f in dataclasses.fields(getattr(cfg, group)):
            cfg.sources[f"{group}.{f.name}"] = "default"
    for dotted, value in tr.values.items():
        group, name = dotted.split(".")
        setattr(getattr(cfg, group), name, value)
        cfg.sources[dotted] = tr.sources[dotted]
    return cfg


def config_to_dict(cfg: NeoxConfig) -> dict[str, Any]:
    """Plain JSON-able form (tuples become lists); `config_from_dict` inverts it."""
    out: dict[str, Any] = {}
    for group in GROUPS:
        out[group] = {
            k: list(v) if isinstance(v, tuple) else copy.deepcopy(v)
            for k, v in dataclasses.asdict(getattr(cfg, group)).items()
        }
    out["sources"] = dict(cfg.sources)
    out["raw"] = copy.deepcopy(cfg.raw)
    out["ignored"] = dict(cfg.ignored)
    return out


def config_from_dict(d: Mapping[str, Any]) -> NeoxConfig:
    """Rebuild a NeoxConfig saved by `config_to_dict` (e.g. from a checkpoint)."""
    cfg = NeoxConfig()
    fields = _field_names()
    for group in GROUPS:
        values = dict(d.get(group, {}))
        if group == "model" and "use_bias" in values:  # before attention/MLP biases split
            both = values.pop("use_bias")
            values.setdefault("attention_bias", both)
            values.setdefault("mlp_bias", both)
        unknown = set(values) - fields[group]
        if unknown:
            raise ConfigError(f"config dict: {group} has no field(s) {sorted(unknown)}")
        for name, value in values.items():
            if name == "betas" and isinstance(value, list):
                value = tuple(value)
            setattr(getattr(cfg, group), name, value)
    cfg.sources = dict(d.get("sources", {}))
    cfg.raw = copy.deepcopy(dict(d.get("raw", {})))
    cfg.ignored = dict(d.get("ignored", {}))
    return cfg


def with_world_size(cfg: NeoxConfig, world_size: int) -> NeoxConfig:
    """A copy of `cfg` for `world_size` processes: data-parallel size and batch re-checked.

    Used at launch, where WORLD_SIZE is known; the dry run assumes one data-parallel rank unless
    the files say otherwise.
    """
    p = cfg.parallel
    model_parallel = p.tensor_parallel_size * p.pipe_parallel_size
    if world_size % model_parallel:
        raise ConfigError(
            f"world size {world_size} is not divisible by tensor x pipeline parallel size "
            f"({p.tensor_parallel_size} x {p.pipe_parallel_size})"
        )
    dp = world_size // model_parallel
    if p.pipe_parallel_size > 1 and p.pipe_schedule == "zero_bubble" and dp > 1:
        # its separate weight-gradient pass runs outside the data-parallel gradient averaging:
        # at PP 2 x DP 2 the losses left one process's at step 3 (PP 2 x TP 2 matches exactly)
        raise ConfigError(
            f"pipe_schedule zero_bubble with data-parallel size {dp} (world size {world_size}) "
            "is not yet supported; use pipe_schedule interleaved_1f1b, or a layout with "
            "data-parallel size 1"
        )
    new = copy.deepcopy(cfg)
    t = new.training
    explicit_batch = new.sources.get("training.train_batch_size") not in (
        None,
        "default",
        "derived",
    )
    if explicit_batch:
        if t.train_batch_size % (t.micro_batch_size * dp):
            raise ConfigError(
                f"{new.sources['training.train_batch_size']}: train_batch_size = "
                f"{t.train_batch_size} is not a multiple of micro batch {t.micro_batch_size} x "
                f"data-parallel size {dp} (world size {world_size})"
            )
        t.gradient_accumulation_steps = t.train_batch_size // (t.micro_batch_size * dp)
        new.sources["training.gradient_accumulation_steps"] = "derived"
    else:
        t.train_batch_size = t.micro_batch_size * t.gradient_accumulation_steps * dp
        new.sources["training.train_batch_size"] = "derived"
    new.parallel.data_parallel_size = dp
    new.sources["parallel.data_parallel_size"] = "derived"
    return new


__all__ = [
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "pad_vocab_size",
    "with_world_size",
]
