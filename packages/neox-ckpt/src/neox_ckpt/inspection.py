"""`neox-ckpt inspect`: what a checkpoint holds — files, tensors, parameters, config, step.

Understands neox checkpoints (a save directory or one `global_step<N>`), HF model folders,
single safetensors files and legacy GPT-NeoX DeepSpeed checkpoints (`*.pt`). Tensors are read
one at a time to compute norms (skip with `norms=False`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from neox_ckpt.errors import ConversionError
from neox_ckpt.neox_reader import step_dir_in
from neox_ckpt.progress import progress

_CONFIG_SUMMARY = (
    "architecture",
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_kv_heads",
    "intermediate_size",
    "padded_vocab_size",
    "rotary_pct",
    "norm",
    "activation",
    "tie_embeddings",
)
_HF_SUMMARY = (
    "model_type",
    "architectures",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "tie_word_embeddings",
    "dtype",
    "torch_dtype",
)


def _norm(t: torch.Tensor) -> float | None:
    """The L2 norm; None (JSON null) where there is none to give: integer/bool tensors, or a
    norm that overflowed or met NaN/inf weights (JSON has no NaN or Infinity)."""
    if not t.is_floating_point():
        return None
    n = float(torch.linalg.vector_norm(t.double()))
    return n if math.isfinite(n) else None


def _file_tree(root: Path) -> list[dict[str, Any]]:
    if root.is_file():
        return [{"path": root.name, "bytes": root.stat().st_size}]
    return [
        {"path": str(p.relative_to(root)), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def _inspect_neox(path: Path, iteration: int | None, norms: bool) -> dict[str, Any]:
    from neox_ckpt.neox_reader import NeoxCheckpoint

    ck = NeoxCheckpoint(path, iteration)
    tensors = []
    items = list(ck.tensors.values())
    for t in progress(items, total=len(items), desc="reading", unit="tensor") if norms else items:
        entry: dict[str, Any] = {
            "name": t.name,
            "shape": list(t.full_shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            "tp_dim": t.tp_dim,
            "pp_stages": t.stages,
        }
        if norms:
            entry["norm"] = _norm(ck.read_full(t.name))
        tensors.append(entry)
    config = ck.config() or {}
    model = config.get("model", {})
    return {
        "kind": "neox",
        "path": str(ck.dir),
        "format_version": ck.manifest.get("format_version"),
        "iteration": ck.iteration,
        "parallel": ck.manifest.get("parallel"),
        "contents": ck.manifest.get("contents"),
        "config": {k: model.get(k) for k in _CONFIG_SUMMARY if k in model},
        "num_parameters": sum(math.prod(t.full_shape) for t in ck.tensors.values()),
        "files": _file_tree(ck.dir),
        "tensors": tensors,
    }


def _inspect_safetensors(root: Path, files: list[Path], norms: bool) -> list[dict[str, Any]]:
    from neox_ckpt.safetensors_stream import SafetensorsReader

    out = []
    for f in files:
        reader = SafetensorsReader(f)
        for name, e in reader.entries.items():
            entry: dict[str, Any] = {
                "name": name,
                "shape": list(e.shape),
                "dtype": str(e.dtype).removeprefix("torch."),
                "file": str(f.relative_to(root)) if root.is_dir() else f.name,
            }
            if norms:
                entry["norm"] = _norm(reader.read(name))
            out.append(entry)
    return out


def _walk_tensors(obj: Any, prefix: str, out: list[tuple[str, torch.Tensor]]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk_tensors(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk_tensors(v, f"{prefix}.{i}", out)


def _inspect_legacy(root: Path, norms: bool) -> dict[str, Any]:
    from neox_ckpt.torch_files import load_weights_only

    tensors = []
    total = 0
    for f in sorted(root.glob("*.pt")):
        found: list[tuple[str, torch.Tensor]] = []
        _walk_tensors(load_weights_only(f), "", found)
        for name, t in found:
            entry: dict[str, Any] = {
                "name": name,
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "file": f.name,
            }
            if norms:
                entry["norm"] = _norm(t)
            tensors.append(entry)
            if "model_states" in f.name and "optim" not in f.name:
                total += t.numel()
    return {
        "kind": "gpt-neox-legacy",
        "path": str(root),
        "num_parameters_stored": total,
        "files": _file_tree(root),
        "tensors": tensors,
    }


def inspect_path(path: str | Path, iteration: int | None = None, norms: bool = True) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"{p} does not exist")
    if p.is_file():
        if p.suffix != ".safetensors":
            raise ConversionError(f"{p}: inspect takes a directory or a .safetensors file")
        tensors = _inspect_safetensors(p, [p], norms)
        return {
            "kind": "safetensors",
            "path": str(p),
            "num_parameters": sum(math.prod(t["shape"]) for t in tensors),
            "files": _file_tree(p),
            "tensors": tensors,
        }
    if (p / "manifest.json").is_file() or ((p / "latest").is_file() and not any(p.glob("*.pt"))):
        if not (p / "manifest.json").is_file():
            step = step_dir_in(p, iteration)
            if not (step / "manifest.json").is_file() and any(step.glob("*.pt")):
                return _inspect_legacy(step, norms)
        return _inspect_neox(p, iteration, norms)
    if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        hf_cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        tensors = _inspect_safetensors(p, sorted(p.glob("*.safetensors")), norms)
        return {
            "kind": "hf",
            "path": str(p),
            "config": {k: hf_cfg[k] for k in _HF_SUMMARY if k in hf_cfg},
            "num_parameters": sum(math.prod(t["shape"]) for t in tensors),
            "files": _file_tree(p),
            "tensors": tensors,
        }
    if any(p.glob("*.pt")):
        return _inspect_legacy(p, norms)
    raise ConversionError(
        f"{p}: not a neox checkpoint (manifest.json / latest), an HF folder "
        "(config.json + *.safetensors) or a GPT-NeoX checkpoint (*.pt)"
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} TB"


def render_text(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']} checkpoint: {info['path']}"]
    for key in ("format_version", "iteration", "parallel", "contents"):
        if key in info:
            lines.append(f"  {key}: {info[key]}")
    if info.get("config"):
        lines.append("  config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    count = info.get("num_parameters", info.get("num_parameters_stored"))
    lines.append(f"  parameters: {count:,}")
    lines.append("files:")
    for f in info["files"]:
        lines.append(f"  {f['path']:<48} {_size(f['bytes']):>10}")
    lines.append("tensors:")
    width = max((len(t["name"]) for t in info["tensors"]), default=10)
    for t in info["tensors"]:
        extra = ""
        if "tp_dim" in t:
            extra = f" tp_dim={t['tp_dim']} pp={t['pp_stages']}"
        elif "file" in t:
            extra = f" [{t['file']}]"
        norm = ""
        if "norm" in t:
            norm = " norm=-" if t["norm"] is None else f" norm={t['norm']:.6g}"
        lines.append(f"  {t['name']:<{width}} {t['dtype']:<9} {t['shape']!s:<18}{norm}{extra}")
    return "\n".join(lines)
