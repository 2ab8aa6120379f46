"""Cluster profiles: YAML data files shipped with the package, extended by the user's own.

Search order for `--profile NAME` (first hit wins): the folders in $NEOX_SLURM_PROFILES
(`:`-separated), then ~/.config/neox-slurm/profiles (or $XDG_CONFIG_HOME/neox-slurm/profiles),
then the package's own `profiles/`. A profile may name `extends: OTHER` to start from another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

PACKAGE_PROFILES = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = "generic"
LAUNCHERS = ("srun", "torchrun")
# `submit --kind`: the jobs users run, each with its node count and log folder per profile.
SUBMIT_KINDS = ("pretrain", "midtrain", "sft", "dpo", "kto", "eval", "convert")
# Every kind a profile's `kinds:` may describe: the submit kinds and the tunnel job.
JOB_KINDS = (*SUBMIT_KINDS, "tunnel")


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Profile:
    """What a cluster needs in every job script, and where its logs live."""

    name: str
    path: Path
    description: str = ""
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 16
    time: str = "02:00:00"
    partition: str | None = None
    account: str | None = None
    launcher: str = "srun"
    sbatch: dict[str, str | None] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    activate_submitting_venv: bool = True
    log_dir: str | None = None
    log_pattern: str = "neox-training-%j.out"
    checkpoint_signal: str | None = "USR1"
    checkpoint_signal_seconds: int = 600
    run: dict[str, int | str] = field(default_factory=dict)
    kinds: dict[str, dict[str, int | str]] = field(default_factory=dict)
    code_cli: str = "code"
    experiments_dir: str | None = None
    hub_org: str | None = None
    eval_command: str = "neox-eval"

    def kind(self, kind: str) -> dict[str, int | str]:
        """The defaults of a job kind: the profile's own (`nodes`, ...) under `kinds.<kind>`."""
        if kind not in JOB_KINDS:
            raise ProfileError(f"unknown job kind {kind!r} (known: {', '.join(JOB_KINDS)})")
        values: dict[str, int | str] = {
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "time": self.time,
        }
        values.update(self.kinds.get(kind, {}))
        return values


RUN_KEYS = {"nodes": int, "gpus_per_node": int, "cpus_per_task": int, "time": str}
# `kinds.<kind>` holds the run keys plus `log_dir`: absolute, or relative to the log folder.
KIND_KEYS = {**RUN_KEYS, "log_dir": str}

_TYPES: dict[str, tuple[type, ...]] = {
    "description": (str,),
    "nodes": (int,),
    "gpus_per_node": (int,),
    "cpus_per_task": (int,),
    "time": (str,),
    "partition": (str, type(None)),
    "account": (str, type(None)),
    "launcher": (str,),
    "sbatch": (dict,),
    "modules": (list,),
    "env": (dict,),
    "setup": (list,),
    "activate_submitting_venv": (bool,),
    "log_dir": (str, type(None)),
    "log_pattern": (str,),
    "checkpoint_signal": (str, type(None)),
    "checkpoint_signal_seconds": (int,),
    "run": (dict,),
    "kinds": (dict,),
    "code_cli": (str,),
    "experiments_dir": (str, type(None)),
    "hub_org": (str, type(None)),
    "eval_command": (str,),
}


def profile_dirs() -> list[Path]:
    """Folders searched for profiles, highest priority first."""
    dirs = [Path(p).expanduser() for p in os.environ.get("NEOX_SLURM_PROFILES", "").split(":") if p]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs.append(config_home / "neox-slurm" / "profiles")
    dirs.append(PACKAGE_PROFILES)
    return dirs


def available_profiles() -> dict[str, Path]:
    """{name: file} of every profile found, the highest-priority file per name."""
    found: dict[str, Path] = {}
    for folder in reversed(profile_dirs()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys, got {type(data).__name__}")
    return data


def _check(path: Path, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in _TYPES:
            known = ", ".join(sorted(_TYPES))
            raise ProfileError(f"{path}: unknown key {key!r} (known: {known})")
        if isinstance(value, bool) and bool not in _TYPES[key]:
            raise ProfileError(f"{path}: key {key!r} must be {_TYPES[key][0].__name__}, got bool")
        if not isinstance(value, _TYPES[key]):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in _TYPES[key])
            raise ProfileError(f"{path}: key {key!r} must be {want}, got {value!r}")
    if data.get("launcher", "srun") not in LAUNCHERS:
        raise ProfileError(f"{path}: key 'launcher' must be one of {LAUNCHERS}")
    for key in ("env", "sbatch"):
        for sub, value in data.get(key, {}).items():
            if not isinstance(value, str | int | float | type(None)) or isinstance(value, bool):
                raise ProfileError(f"{path}: {key}.{sub} must be a string or number")
    for key, value in data.get("run", {}).items():
        if key not in RUN_KEYS:
            raise ProfileError(f"{path}: unknown key run.{key} (known: {', '.join(RUN_KEYS)})")
        if not isinstance(value, RUN_KEYS[key]) or isinstance(value, bool):
            raise ProfileError(f"{path}: run.{key} must be {RUN_KEYS[key].__name__}")
    for kind, values in data.get("kinds", {}).items():
        if kind not in JOB_KINDS:
            raise ProfileError(
                f"{path}: unknown job kind kinds.{kind} (known: {', '.join(JOB_KINDS)})"
            )
        if not isinstance(values, dict):
            raise ProfileError(f"{path}: kinds.{kind} must be a mapping, got {values!r}")
        for key, value in values.items():
            if key not in KIND_KEYS:
                known = ", ".join(KIND_KEYS)
                raise ProfileError(f"{path}: unknown key kinds.{kind}.{key} (known: {known})")
            if not isinstance(value, KIND_KEYS[key]) or isinstance(value, bool):
                raise ProfileError(
                    f"{path}: kinds.{kind}.{key} must be {KIND_KEYS[key].__name__}, got {value!r}"
                )
    for key in ("modules", "setup"):
        for item in data.get(key, []):
            if not isinstance(item, str):
                raise ProfileError(f"{path}: every entry of {key!r} must be a string: {item!r}")


def load_profile(name: str | None = None) -> Profile:
    """The profile NAME (default: $NEOX_SLURM_PROFILE or `generic`), or a file path."""
    name = name or os.environ.get("NEOX_SLURM_PROFILE") or DEFAULT_PROFILE
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
    else:
        profiles = available_profiles()
        if name not in profiles:
            raise ProfileError(
                f"no profile named {name!r}; known: {', '.join(profiles)} "
                f"(searched {', '.join(str(d) for d in profile_dirs())})"
            )
        path = profiles[name]
    return _load(path, seen=())


def _load(path: Path, seen: tuple[Path, ...]) -> Profile:
    if path in seen:
        raise ProfileError(f"{path}: `extends` loops back on itself")
    data = _read(path)
    parent_name = data.pop("extends", None)
    _check(path, data)
    values: dict[str, Any] = {}
    if parent_name is not None:
        if not isinstance(parent_name, str):
            raise ProfileError(f"{path}: key 'extends' must name a profile")
        profiles = available_profiles()
        if parent_name not in profiles:
            raise ProfileError(f"{path}: extends unknown profile {parent_name!r}")
        parent = _load(profiles[parent_name], (*seen, path))
        values = {f.name: getattr(parent, f.name) for f in fields(parent)}
        for key in ("env", "sbatch", "run"):  # mappings merge; lists and scalars replace
            if key in data:
                data[key] = {**values[key], **data[key]}
        if "kinds" in data:  # per kind too: a child may change only pretrain's nodes
            merged = {k: dict(v) for k, v in values["kinds"].items()}
            for kind, kind_values in data["kinds"].items():
                merged[kind] = {**merged.get(kind, {}), **kind_values}
            data["kinds"] = merged
    values.update(data)
    values["name"] = path.stem
    values["path"] = path
    values["env"] = {k: str(v) for k, v in values.get("env", {}).items()}
    values["sbatch"] = {
        k: (None if v is None else str(v)) for k, v in values.get("sbatch", {}).items()
    }
    return Profile(**values)
