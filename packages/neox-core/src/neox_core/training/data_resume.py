"""Resume reads the data from where the checkpoint left it, and from the same data.

The loader restarts at the checkpoint's `train_samples_consumed`; that position only means
the same samples when the data config that orders them (paths, weights, split, seq_length,
seed, packing) is the one the run was saved with. A checkpoint therefore records a fingerprint
of that config next to the position, and a resume with a different one stops with the changed
keys named, unless the change is deliberate (`finetune: true`, which starts the data at 0, or
`allow_data_config_change: true`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from neox_core.config import NeoxConfig
from neox_core.data.checks import DataCheckError

# data fields that decide which sample sits at which position (num_workers etc. do not)
_DATA_FIELDS = (
    "data_path",
    "split",
    "train_data_paths",
    "valid_data_paths",
    "test_data_paths",
    "train_data_weights",
    "valid_data_weights",
    "test_data_weights",
    "label_data_paths",
    "valid_label_data_paths",
    "test_label_data_paths",
    "seq_length",
    "pack_impl",
    "allow_chopped",
    "weight_by_num_documents",
    "weighted_sampler_alpha",
)


class DataResumeError(DataCheckError):
    """The data config or position differs from the checkpoint's (one-line message)."""


def data_config_fields(cfg: NeoxConfig) -> dict[str, Any]:
    """The fingerprinted fields, by GPT-NeoX key name, JSON-able."""
    fields = {name: getattr(cfg.data, name) for name in _DATA_FIELDS}
    fields["seed"] = cfg.training.seed
    return json.loads(json.dumps(fields))


def fingerprint(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def train_batch_size(cfg: NeoxConfig) -> int:
    t = cfg.training
    return t.train_batch_size or (
        t.micro_batch_size * t.gradient_accumulation_steps * cfg.parallel.data_parallel_size
    )


def record_data_config(state: dict[str, Any], cfg: NeoxConfig) -> None:
    """Add the fingerprint (and the batch size the position counts in) to a trainer_state."""
    fields = data_config_fields(cfg)
    data = state.setdefault("data", {})
    data["train_batch_size"] = train_batch_size(cfg)
    data["config"] = fields
    data["config_fingerprint"] = fingerprint(fields)


def _changes(saved: dict[str, Any], now: dict[str, Any], cfg: NeoxConfig) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            group = "training" if key == "seed" else "data"
            source = cfg.sources.get(f"{group}.{key}", "default")
            out.append(f"{key} {saved.get(key)!r} -> {now.get(key)!r} ({source})")
    return out


def check_data_resume(
    cfg: NeoxConfig, state: dict[str, Any], iteration: int, where: str, log: Any
) -> None:
    """Log the data position; raise DataResumeError when it or the data config changed."""
    data = state.get("data", {})
    consumed = int(data.get("train_samples_consumed", 0))
    valid = int(data.get("valid_samples_consumed", 0))
    allowed = cfg.data.allow_data_config_change
    override = "allowed by allow_data_config_change: true"
    log(
        f" > data: resuming after {consumed:,} train samples consumed "
        f"({valid:,} validation samples) as recorded in {where}"
    )
    saved_batch = data.get("train_batch_size")
    now_batch = train_batch_size(cfg)
    if saved_batch is not None and consumed != iteration * int(saved_batch):
        # not an error: a run whose batch size changed earlier (a ramp) gets here legitimately
        log(
            f" > data: note: {consumed} train samples consumed at iteration {iteration} is not "
            f"iteration x train_batch_size {saved_batch}: the batch size changed during the run"
        )
    if saved_batch is not None and int(saved_batch) != now_batch:
        log(f" > data: train_batch_size {saved_batch} -> {now_batch} from here on")
    saved = data.get("config")
    if saved is None:
        log(f" > data: {where} records no data config (an older checkpoint): not compared")
        return
    changes = _changes(saved, data_config_fields(cfg), cfg)
    if not changes:
        return
    if not allowed:
        raise DataResumeError(
            f"{where}: the data config differs from the checkpoint's: {'; '.join(changes)}. "
            "The data position would index other samples; set allow_data_config_change: true "
            "(or finetune: true to start the data from 0) if this is intended"
        )
    log(f" > data: config changed since the checkpoint ({override}): {'; '.join(changes)}")
