"""`neox-ckpt neox-to-hf`: merge a neox checkpoint's TP/PP shards into an HF model folder.

Writes `config.json`, `model-0000k-of-0000n.safetensors` shards with
`model.safetensors.index.json`, `generation_config.json` and, when given, tokenizer files, so
`transformers.AutoModelForCausalLM.from_pretrained(<output>)` loads it. A reward model
(neox-posttrain's `train_impl: rm`, a checkpoint with a `score.weight` head) becomes a
`*ForSequenceClassification` folder with `num_labels: 1` that
`AutoModelForSequenceClassification` loads; its LM head is not exported.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_ckpt import units
from neox_ckpt.dtypes import TORCH_DTYPES, precision_name
from neox_ckpt.errors import ConversionError
from neox_ckpt.hf_config import HF_HEADS, hf_config_json
from neox_ckpt.hf_source import TOKENIZER_FILES
from neox_ckpt.model_layout import check_against_model
from neox_ckpt.neox_reader import NeoxCheckpoint
from neox_ckpt.output_dir import staged_output
from neox_ckpt.progress import progress
from neox_ckpt.safetensors_stream import SafetensorsWriter, nbytes

DEFAULT_MAX_SHARD = "5GB"
_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
REWARD_HEAD = "score.weight"  # neox-posttrain's reward head, HF's sequence-classification head


@dataclass
class NeoxToHFResult:
    output_dir: Path
    architecture: str
    precision: str
    num_shards: int
    total_bytes: int


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' or a plain byte count -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConversionError(f"--max-shard-size {text!r}: expected e.g. 5GB, 500MB or bytes")
    unit = (m.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    return int(float(m.group(1)) * base**power)


def _model_config(ck: NeoxCheckpoint, config_paths: list[str] | None) -> Any:
    return _config(ck, config_paths).model


def _config(ck: NeoxCheckpoint, config_paths: list[str] | None) -> Any:
    from neox_core.config import ConfigError, config_from_dict, load_config

    try:
        if config_paths:
            cfg = load_config(
                config_paths, overrides={"model_parallel_size": 1, "pipe_parallel_size": 1}
            )
        else:
            saved = ck.config()
            if saved is None:
                raise ConversionError(
                    f"{ck.dir} has no config.json; pass the run's YAML files with --config"
                )
            cfg = config_from_dict(saved)
    except ConfigError as e:
        raise ConversionError(f"config of {ck.dir}: {e}") from None
    return cfg


def _token_ids(ck: NeoxCheckpoint) -> tuple[dict[str, Any], bytes | None]:
    """Special-token ids and generation config recorded by hf-to-neox, when present."""
    ids: dict[str, Any] = {}
    hf_cfg = ck.dir / "hf" / "config.json"
    if hf_cfg.is_file():
        raw = json.loads(hf_cfg.read_text(encoding="utf-8"))
        ids = {k: raw.get(k) for k in _TOKEN_KEYS if raw.get(k) is not None}
    gen = ck.dir / "hf" / "generation_config.json"
    return ids, gen.read_bytes() if gen.is_file() else None


def _copy_tokenizer(src: Path, dest: Path) -> None:
    if src.is_dir():
        found = [f for f in TOKENIZER_FILES if (src / f).is_file()]
        if not found:
            raise ConversionError(
                f"--tokenizer {src}: no tokenizer files ({', '.join(TOKENIZER_FILES)})"
            )
        for f in found:
            shutil.copyfile(src / f, dest / f)
    elif src.is_file() and src.suffix == ".json":
        from transformers import PreTrainedTokenizerFast

        try:
            tok = PreTrainedTokenizerFast(tokenizer_file=str(src))
        except Exception as e:  # tokenizers raises its own exception types
            raise ConversionError(f"--tokenizer {src}: not a tokenizer.json ({e})") from None
        tok.save_pretrained(str(dest))
    else:
        raise ConversionError(
            f"--tokenizer {src}: expected an HF tokenizer folder or tokenizer.json"
        )


def neox_to_hf(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    iteration: int | None = None,
    precision: str = "auto",
    tokenizer: str | Path | None = None,
    config_paths: list[str] | None = None,
    max_shard_size: str = DEFAULT_MAX_SHARD,
    force: bool = False,
) -> NeoxToHFResult:
    from neox_core.models.hf_names import NameMappingError, hf_architecture, to_hf

    ck = NeoxCheckpoint(input_dir, iteration)
    cfg = _config(ck, config_paths)
    model_cfg = cfg.model
    reward = REWARD_HEAD in ck.tensors
    try:
        arch = hf_architecture(model_cfg)
    except NameMappingError as e:
        raise ConversionError(f"{ck.dir}: {e}") from None
    names = [n for n in ck.tensors if n != REWARD_HEAD]
    check_against_model(model_cfg, {n: ck.tensors[n].full_shape for n in names}, str(ck.dir))
    if precision == "auto":
        precision = precision_name(ck.tensors["embed.weight"].dtype, str(ck.dir))
    if precision not in TORCH_DTYPES:
        raise ConversionError(f"--precision {precision}: expected fp32, bf16 or fp16")
    dtype = TORCH_DTYPES[precision]
    limit = parse_size(max_shard_size)

    def keep(name: str) -> bool:
        return not ((model_cfg.tie_embeddings or reward) and name in HF_HEADS)

    produced = units.plan(to_hf, model_cfg, names, ck.meta)
    planned = {n: t for n, t in produced.items() if keep(n)}
    if reward:
        planned[REWARD_HEAD] = ck.meta(REWARD_HEAD)
    shards: list[list[str]] = [[]]
    size = 0
    for n, t in planned.items():
        b = nbytes(dtype, t.shape)
        if shards[-1] and size + b > limit:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += b
    count = len(shards)
    file_of = {
        n: f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i, s in enumerate(shards) for n in s
    }
    total = sum(nbytes(dtype, t.shape) for t in planned.values())
    token_ids, generation = _token_ids(ck)

    with staged_output(output_dir, force=force) as tmp:
        writers = {
            f"model-{i + 1:05d}-of-{count:05d}.safetensors": SafetensorsWriter(
                tmp / f"model-{i + 1:05d}-of-{count:05d}.safetensors",
                [(n, dtype, tuple(planned[n].shape)) for n in s],
                metadata={"format": "pt"},
            )
            for i, s in enumerate(shards)
        }
        try:
            stream = units.stream(to_hf, model_cfg, names, ck.read_full, ck.meta)
            for n, t in progress(stream, total=len(produced), desc="neox-to-hf", unit="tensor"):
                if keep(n):
                    writers[file_of[n]].write(n, t.to(dtype))
            if reward:
                head = ck.read_full(REWARD_HEAD).to(dtype)
                writers[file_of[REWARD_HEAD]].write(REWARD_HEAD, head)
            for w in writers.values():
                w.close()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(file_of.items()))}
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2) + "\n", encoding="utf-8"
        )
        if tokenizer is not None:
            _copy_tokenizer(Path(tokenizer), tmp)
        if reward:
            pad = getattr(getattr(cfg, "posttrain", None), "rm_pad_token_id", None)
            if pad is not None:
                token_ids["pad_token_id"] = pad
        (tmp / "config.json").write_text(
            hf_config_json(model_cfg, precision, token_ids, sequence_classification=reward),
            encoding="utf-8",
        )
        if generation is not None:
            (tmp / "generation_config.json").write_bytes(generation)
        else:
            from transformers import GenerationConfig

            GenerationConfig(**token_ids).to_json_file(str(tmp / "generation_config.json"))
    if reward:
        arch = arch.replace("ForCausalLM", "ForSequenceClassification")
    return NeoxToHFResult(Path(output_dir), arch, precision, count, total)


def describe(r: NeoxToHFResult) -> str:
    return (
        f"wrote {r.output_dir} ({r.architecture}, {r.precision}, {r.num_shards} shard(s), "
        f"{r.total_bytes / 1e6:.1f} MB)"
    )


__all__ = ["NeoxToHFResult", "describe", "neox_to_hf", "parse_size"]
