"""`neox-ckpt verify`: is a neox checkpoint whole, and does it fit the model it claims to be?

Checked without loading any tensor data beyond the content hashes: every file against the
manifest (exists, size, safetensors header, xxh3_64 hash), the TP/PP/DP set of files for
completeness, each tensor's shard record against its stored shape and the model that
`config.json` describes, optimizer chunks for full coverage, and (given a save directory)
that `latest` names a complete step. Every problem is reported, each naming its file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neox_ckpt.errors import ConversionError
from neox_ckpt.safetensors_stream import SafetensorsReader
from neox_core.checkpoint import file_problems, file_records, layout
from neox_core.checkpoint.integrity import HASH_NAME
from neox_core.checkpoint.placement import chunk_region
from neox_core.checkpoint.sharding import ShardInfo


@dataclass
class StepReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    hashed: bool = False
    iteration: int | None = None
    parallel: dict[str, int] = field(default_factory=dict)


@dataclass
class VerifyReport:
    steps: list[StepReport]
    problems: list[str]  # about the save directory itself (`latest`)
    latest: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and all(not s.problems for s in self.steps)

    def lines(self) -> list[str]:
        """One line per problem, or one OK summary line."""
        out = list(self.problems)
        for s in self.steps:
            out += s.problems
        if out:
            return out
        parts = []
        for s in self.steps:
            p = s.parallel
            layout_text = (
                f"TP {p.get('tensor_parallel_size')} x PP {p.get('pipe_parallel_size')} "
                f"x DP {p.get('data_parallel_size')}"
            )
            check = "sizes+hashes" if s.hashed else "sizes"
            parts.append(
                f"{s.path.name} (iteration {s.iteration}, {layout_text}, {s.files} files, "
                f"{s.bytes / 1e6:.1f} MB, {check})"
            )
        latest = f"; latest -> {self.latest}" if self.latest else ""
        return [f"OK {', '.join(parts)}{latest}"]


def verify(
    path: str | Path, iteration: int | None = None, all_steps: bool = False, hashes: bool = True
) -> VerifyReport:
    """Verify a step directory, or a save directory's `latest` step (or `iteration`, or every
    step with `all_steps`)."""
    p = Path(path)
    if not p.is_dir():
        raise ConversionError(f"{p} is not a directory")
    if layout.step_of(p) is not None or (p / layout.MANIFEST_FILE).is_file():
        return VerifyReport([verify_step(p, hashes)], [])
    problems: list[str] = []
    steps = dict(layout.list_step_dirs(p))
    latest_file = p / layout.LATEST_FILE
    latest: str | None = None
    if latest_file.is_file():
        latest = latest_file.read_text(encoding="utf-8").strip()
        if layout.step_of(latest) is None or not (p / latest).is_dir():
            problems.append(f"{latest_file}: names {latest!r}, not a step directory in {p}")
            latest = None
    elif steps:
        problems.append(f"{latest_file}: missing although {p} holds step directories")
    else:
        raise ConversionError(f"{p}: neither a checkpoint step nor a save directory with one")
    if all_steps:
        chosen = list(steps.values())
    elif iteration is not None:
        if iteration not in steps:
            raise ConversionError(f"{p}: no global_step{iteration}; available: {sorted(steps)}")
        chosen = [steps[iteration]]
    else:
        chosen = [p / latest] if latest else []
    reports = [verify_step(s, hashes) for s in chosen]
    if latest:
        bad = [r for r in reports if r.path.name == latest and r.problems]
        if bad:
            problems.append(f"{latest_file}: names {latest}, which does not verify (below)")
    return VerifyReport(reports, problems, latest)


def verify_step(step: Path, hashes: bool = True) -> StepReport:
    report = StepReport(step)
    manifest = _manifest(step, report)
    if manifest is None:
        return report
    report.iteration = manifest.get("iteration")
    report.parallel = dict(manifest.get("parallel") or {})
    records = file_records(manifest)
    report.files = len(records)
    report.bytes = sum(int(r.get("size") or 0) for r in records.values())
    report.hashed = hashes and all(HASH_NAME in r for r in records.values())
    damaged = dict(file_problems(step, manifest, hashes))
    report.problems += [f"{step / name}: {why}" for name, why in damaged.items()]
    on_disk = {
        str(f.relative_to(step)) for f in step.rglob("*") if f.is_file() or f.is_symlink()
    } - {layout.MANIFEST_FILE}
    report.problems += [
        f"{step / n}: not listed in the manifest" for n in sorted(on_disk - set(records))
    ]
    expected = _expected_files(manifest)
    report.problems += [
        f"{step / n}: missing from the manifest (the shard set of "
        f"{_layout_text(manifest)} is incomplete)"
        for n in sorted(expected - set(records))
    ]
    usable = {n for n in records if n not in damaged}
    _check_tensors(step, manifest, usable, report)
    return report


def _manifest(step: Path, report: StepReport) -> dict[str, Any] | None:
    mpath = step / layout.MANIFEST_FILE
    if not mpath.is_file():
        report.problems.append(f"{mpath}: missing (an incomplete save?)")
        return None
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        report.problems.append(f"{mpath}: not valid JSON ({e})")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != layout.FORMAT_NAME:
        report.problems.append(f"{mpath}: not a neox checkpoint manifest")
        return None
    if manifest.get("format_version") not in layout.SUPPORTED_VERSIONS:
        report.problems.append(
            f"{mpath}: format_version {manifest.get('format_version')} unknown to this reader"
        )
        return None
    return manifest


def _sizes(manifest: Mapping[str, Any]) -> tuple[int, int, int]:
    p = manifest.get("parallel") or {}
    return (
        int(p.get("tensor_parallel_size") or 1),
        int(p.get("pipe_parallel_size") or 1),
        int(p.get("data_parallel_size") or 1),
    )


def _layout_text(manifest: Mapping[str, Any]) -> str:
    tp, pp, dp = _sizes(manifest)
    return f"TP {tp} x PP {pp} x DP {dp}"


def _expected_files(manifest: Mapping[str, Any]) -> set[str]:
    """The files a complete checkpoint of this layout and contents must list."""
    tp, pp, dp = _sizes(manifest)
    contents = manifest.get("contents") or {}
    version = manifest.get("format_version")
    out = {layout.model_file(r, s) for r in range(tp) for s in range(pp)}
    if contents.get("optimizer"):
        dps = range(dp) if version != 1 else range(1)
        for r in range(tp):
            for s in range(pp):
                for d in dps:
                    out.update(layout.optimizer_files(r, s, d))
    if contents.get("rng"):
        for rank in range(tp * pp * dp):
            out.update(layout.rng_files(rank))
    if contents.get("trainer_state"):
        out.add(layout.TRAINER_STATE_FILE)
    return out


def _model_shapes(step: Path, report: StepReport) -> dict[str, tuple[int, ...]] | None:
    """Full shapes of the model `config.json` describes, or None when there is no config."""
    cpath = step / layout.CONFIG_FILE
    if not cpath.is_file():
        return None
    from neox_ckpt.model_layout import model_shapes
    from neox_core.config import ConfigError, config_from_dict

    try:
        cfg = config_from_dict(json.loads(cpath.read_text(encoding="utf-8")))
        return model_shapes(cfg.model)
    except (ConfigError, ValueError, TypeError, KeyError) as e:
        report.problems.append(f"{cpath}: cannot build the model it describes ({e})")
        return None


def _check_tensors(
    step: Path, manifest: Mapping[str, Any], usable: set[str], r: StepReport
) -> None:
    tp, pp, _ = _sizes(manifest)
    weights: dict[str, tuple[tuple[int, ...], str]] = {}  # name -> (full shape, dtype)
    per_file: dict[tuple[int, int], set[str]] = {}
    for rank in range(tp):
        for stage in range(pp):
            name = layout.model_file(rank, stage)
            if name not in usable:
                continue
            f = step / name
            names = per_file.setdefault((rank, stage), set())
            for key, info, shape, dtype in _records(f, r):
                names.add(key)
                if info is None:
                    r.problems.append(f"{f}: tensor {key!r} has no shard record")
                    continue
                where = f"{f}: tensor {key!r}"
                if (info.tp_rank, info.pp_stage) != (rank, stage):
                    r.problems.append(
                        f"{where} is recorded as tp rank {info.tp_rank}, pp stage {info.pp_stage}"
                    )
                if (info.tp_world_size, info.pp_world_size) != (tp, pp):
                    r.problems.append(
                        f"{where} is recorded for TP {info.tp_world_size} x PP "
                        f"{info.pp_world_size}, the manifest says TP {tp} x PP {pp}"
                    )
                _check_region(info, None, shape, where, r)
                known = weights.setdefault(key, (info.full_shape, dtype))
                if known != (info.full_shape, dtype):
                    r.problems.append(
                        f"{where} is {list(info.full_shape)} {dtype} here, "
                        f"{list(known[0])} {known[1]} in another shard"
                    )
    for stage in range(pp):
        sets = [per_file[(k, stage)] for k in range(tp) if (k, stage) in per_file]
        for k in range(tp):
            if (k, stage) in per_file and sets and per_file[(k, stage)] != sets[0]:
                diff = sorted(per_file[(k, stage)] ^ sets[0])[:3]
                r.problems.append(
                    f"{step / layout.model_file(k, stage)}: holds other tensors than TP rank 0 "
                    f"of its stage ({diff})"
                )
    expected = _model_shapes(step, r)
    if expected is not None and len(per_file) == tp * pp:
        stored = {n: s for n, (s, _) in weights.items()}
        for n in sorted(set(expected) - set(stored)):
            r.problems.append(f"{step}: tensor {n!r} of the model in config.json is in no file")
        for n in sorted(set(stored) - set(expected)):
            r.problems.append(f"{step}: tensor {n!r} is not in the model config.json describes")
        for n in sorted(set(stored) & set(expected)):
            if tuple(stored[n]) != tuple(expected[n]):
                r.problems.append(
                    f"{step}: tensor {n!r} is {list(stored[n])}, the model in config.json "
                    f"has {list(expected[n])}"
                )
    if manifest.get("format_version") != 1:
        _check_optimizer_cover(step, usable, r)


def _records(f: Path, r: StepReport) -> list[tuple[str, ShardInfo | None, tuple[int, ...], str]]:
    """(name, shard record, stored shape, dtype) of every tensor in a safetensors file."""
    try:
        reader = SafetensorsReader(f)
        raw = json.loads(reader.metadata.get("neox_shards", "{}"))
    except (ConversionError, json.JSONDecodeError) as e:
        r.problems.append(f"{f}: {e}")
        return []
    out = []
    for key, e in reader.entries.items():
        rec = raw.get(key)
        info = None
        if rec is not None:
            try:
                info = ShardInfo.from_json(rec)
            except (ValueError, TypeError, KeyError) as err:
                r.problems.append(f"{f}: tensor {key!r} has a bad shard record ({err})")
                continue
        out.append((key, info, e.shape, str(e.dtype).removeprefix("torch.")))
    return out


def _check_region(
    info: ShardInfo,
    rec: Mapping[str, Any] | None,
    shape: tuple[int, ...],
    where: str,
    r: StepReport,
) -> int:
    """The stored shape must be what the record implies; returns the stored element count."""
    try:
        offset = rec.get("chunk_offset") if rec else None
        cshape = rec.get("chunk_shape") if rec else None
        implied = chunk_region(info, offset, cshape).shape
    except (ValueError, TypeError) as e:
        r.problems.append(f"{where}: bad shard record ({e})")
        return 0
    if tuple(implied) != tuple(shape):
        r.problems.append(f"{where}: stored as {list(shape)}, its record implies {list(implied)}")
    return math.prod(shape)


def _check_optimizer_cover(step: Path, usable: set[str], r: StepReport) -> None:
    """Each moment's chunks, over all files, hold exactly as many elements as the tensor."""
    held: dict[str, int] = {}
    full: dict[str, int] = {}
    for name in sorted(usable):
        if not (name.startswith("optimizer_") and name.endswith(".safetensors")):
            continue
        f = step / name
        try:
            reader = SafetensorsReader(f)
            raw = json.loads(reader.metadata.get("neox_shards", "{}"))
        except (ConversionError, json.JSONDecodeError) as e:
            r.problems.append(f"{f}: {e}")
            continue
        for key, e in reader.entries.items():
            rec = raw.get(key)
            if rec is None:
                continue  # scalar state (`step`), stored whole in every file
            try:
                info = ShardInfo.from_json(rec)
            except (ValueError, TypeError, KeyError) as err:
                r.problems.append(f"{f}: tensor {key!r} has a bad shard record ({err})")
                continue
            held[key] = held.get(key, 0) + _check_region(info, rec, e.shape, f"{f}: {key!r}", r)
            full[key] = math.prod(info.full_shape)
    for key in sorted(held):
        if held[key] != full[key]:
            r.problems.append(
                f"{step}: optimizer tensor {key!r}: the chunks in the optimizer files hold "
                f"{held[key]} of its {full[key]} elements"
            )
