"""A trained model and its tokenizer, ready for inference on one device.

A checkpoint saved at tensor-parallel size > 1 (or in pipeline stages) is merged on load from
the per-tensor shard records the format stores, so any neox checkpoint runs here at TP 1.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from neox_core.checkpoint import (
    CheckpointError,
    read_manifest,
    read_shard_infos,
    resolve_checkpoint_dir,
)
from neox_core.checkpoint.sharding import ShardInfo
from neox_core.config.schema import NeoxConfig
from neox_core.models import build_model
from neox_core.models.decoder import CausalLM
from neox_core.models.hf_names import load_by_name

_MODEL_FILE = re.compile(r"^model_tp(\d+)_pp(\d+)\.safetensors$")
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class InferenceModel:
    model: CausalLM
    iteration: int  # the checkpoint's step (0 for freshly initialised weights)
    checkpoint: Path | None  # the global_step<N> directory read, if any


def _merge(name: str, pieces: list[tuple[ShardInfo, torch.Tensor]], where: Path) -> torch.Tensor:
    pieces = sorted(pieces, key=lambda p: p[0].tp_rank)
    info = pieces[0][0]
    ranks = [p[0].tp_rank for p in pieces]
    if ranks != list(range(info.tp_world_size)):
        raise CheckpointError(f"{where}: {name} has pieces of tp ranks {ranks}")
    tensors = [p[1] for p in pieces]
    if info.tp_dim is None or info.tp_world_size == 1:
        return tensors[0]
    dim = info.tp_dim
    if info.tp_blocks is None:
        full = torch.cat(tensors, dim=dim)
    else:
        # each rank holds [block0_r; block1_r; ...]: regroup block by block
        world = info.tp_world_size
        per_rank = [b // world for b in info.tp_blocks]
        split = [t.split(per_rank, dim=dim) for t in tensors]
        full = torch.cat(
            [torch.cat([split[r][k] for r in range(world)], dim=dim) for k in range(len(per_rank))],
            dim=dim,
        )
    if tuple(full.shape) != tuple(info.full_shape):
        raise CheckpointError(
            f"{where}: merged {name} has shape {tuple(full.shape)}, its record says "
            f"{tuple(info.full_shape)}"
        )
    return full


def merged_weights(ckpt_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every model tensor of a `global_step<N>` directory at full size, whatever its TP/PP."""
    ckpt = Path(ckpt_dir)
    read_manifest(ckpt)  # checks that every listed file is whole
    pieces: dict[str, dict[int, list[tuple[ShardInfo, torch.Tensor]]]] = {}
    files = sorted(f for f in ckpt.iterdir() if _MODEL_FILE.match(f.name))
    if not files:
        raise CheckpointError(f"{ckpt}: no model_tp*_pp*.safetensors files")
    for f in files:
        infos = read_shard_infos(f)
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                info = infos.get(name)
                if info is None:
                    raise CheckpointError(f"{f}: tensor {name!r} has no shard record")
                by_stage = pieces.setdefault(name, {})
                by_stage.setdefault(info.pp_stage, []).append((info, st.get_tensor(name)))
    # a tensor in several stages (a tied embedding) is the same in each: take the first stage
    return {name: _merge(name, stages[min(stages)], ckpt) for name, stages in pieces.items()}


def load_inference_model(
    cfg: NeoxConfig,
    *,
    load_dir: str | Path | None = None,
    iteration: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | None = None,
) -> InferenceModel:
    """The model of `cfg` with the weights of `load_dir` (default `load`, then `save`).

    `dtype` defaults to the config's precision; `device` to CUDA when available.
    """
    root = load_dir or cfg.checkpoint.load or cfg.checkpoint.save
    if root is None:
        raise CheckpointError("no checkpoint to load: set `load` in the config or pass --load")
    ckpt = resolve_checkpoint_dir(
        root, iteration if iteration is not None else cfg.checkpoint.iteration
    )
    manifest = read_manifest(ckpt)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = merged_weights(ckpt)
    model_cfg = cfg.model
    rows = weights["embed.weight"].shape[0] if "embed.weight" in weights else None
    if rows is not None and rows != model_cfg.padded_vocab_size:
        # the vocabulary was padded for the saving run's TP size; the checkpoint knows it
        model_cfg = dataclasses.replace(model_cfg, padded_vocab_size=rows)
    model = build_model(model_cfg, seed=None, dtype=dtype or cfg.precision.dtype, device=device)
    try:
        load_by_name(model, weights)
    except ValueError as e:
        raise CheckpointError(f"{ckpt}: {e}") from None
    return InferenceModel(model.eval(), int(manifest["iteration"]), ckpt)


def build_tokenizer_for(cfg: NeoxConfig):  # -> neox_data.tokenizer.Tokenizer
    """The tokenizer named by the config's `tokenizer_type`, `vocab_file` and `merge_file`."""
    from neox_data.tokenizer import TokenizerSpec, build_tokenizer

    d = cfg.data
    return build_tokenizer(
        TokenizerSpec(
            tokenizer_type=d.tokenizer_type, vocab_file=d.vocab_file, merge_file=d.merge_file
        )
    )


# Inference runs at tensor- and pipeline-parallel size 1 whatever the training run used.
SINGLE_DEVICE_OVERRIDES = {"model_parallel_size": 1, "pipe_parallel_size": 1}


def load_inference_config(paths: list[str], overrides: dict | None = None) -> NeoxConfig:
    """The config of `paths` for single-device inference (TP/PP of the saving run dropped)."""
    from neox_core.config import load_config

    return load_config(paths, {**SINGLE_DEVICE_OVERRIDES, **(overrides or {})})


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]
