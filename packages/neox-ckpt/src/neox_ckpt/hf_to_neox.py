"""`neox-ckpt hf-to-neox`: an HF GPT-NeoX / LLaMA model -> neox checkpoint v1 + neox YAML."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from neox_ckpt import units
from neox_ckpt.dtypes import TORCH_DTYPES, precision_name
from neox_ckpt.errors import ConversionError
from neox_ckpt.hf_config import HF_HEADS, neox_model_keys
from neox_ckpt.hf_source import TOKENIZER_FILES, HFSource, resolve_model_dir
from neox_ckpt.model_layout import (
    RECOMPUTED_BUFFERS,
    check_against_model,
    model_shapes,
    plan_tensors,
)
from neox_ckpt.neox_writer import write_checkpoint
from neox_ckpt.neox_yaml import YAML_NAME, load_written_yaml, render_yaml
from neox_ckpt.output_dir import staged_output
from neox_ckpt.tp_rules import check_tp_degree
from neox_ckpt.vocab import vocab_keys

_VOCAB_PARALLEL = ("embed.weight", "lm_head.weight")
_HF_EMBEDS = ("model.embed_tokens.weight", "gpt_neox.embed_in.weight")


@dataclass
class HFToNeoxResult:
    output_dir: Path
    step_dir: Path
    yaml_path: Path
    architecture: str
    num_parameters: int
    padded_from: int | None  # original vocab rows when padding for TP was needed
    notes: list[str]


def _copy_tokenizer(
    folder: Path, tmp: Path, final: Path, rows: int, tp: int, model_keys: dict
) -> tuple[Path | None, list[str]]:
    """Copy the HF tokenizer files to `<output>/tokenizer/` and add the vocabulary keys.

    Returns the tokenizer.json the YAML should name (None if absent or unusable) and notes.
    """
    notes: list[str] = []
    vocab_file = None
    tok_files = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if tok_files:
        (tmp / "tokenizer").mkdir()
        for f in tok_files:
            shutil.copyfile(folder / f, tmp / "tokenizer" / f)
    keys = None
    if "tokenizer.json" in tok_files:
        from neox_core.config.derive import vocab_size_from_file

        tokens = vocab_size_from_file("HFTokenizer", str(folder / "tokenizer.json"))
        keys = vocab_keys(rows, tp, tokens)
        if keys is None:
            notes.append(
                f"tokenizer.json has {tokens} tokens, which GPT-NeoX padding cannot map "
                f"onto {rows} embedding rows; set vocab-file yourself"
            )
        else:
            vocab_file = final / "tokenizer" / "tokenizer.json"
    model_keys.update(keys or vocab_keys(rows, tp, None) or {})
    return vocab_file, notes


def _planned_shapes(
    source: HFSource, model_cfg, dtype: str, padded_rows: int, padded: bool
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every neox tensor's full shape and stored dtype."""
    from neox_core.models.hf_names import NameMappingError, from_hf

    names = source.names()
    out_dtype = None if dtype == "auto" else TORCH_DTYPES[dtype]
    if out_dtype is None:
        weights = [n for n in names if not n.endswith(RECOMPUTED_BUFFERS)]
        kinds = {source.meta(n).dtype for n in weights if source.meta(n).is_floating_point()}
        out_dtype = kinds.pop() if len(kinds) == 1 else None
    if out_dtype is not None:  # one dtype: neox's own model gives names and shapes
        return {n: (s, out_dtype) for n, s in model_shapes(model_cfg).items()}
    # mixed dtypes: a dry run of the mapping on meta tensors gives each output's dtype
    try:
        planned_meta = units.plan(from_hf, model_cfg, names, source.meta)
    except NameMappingError as e:
        raise ConversionError(f"{source.folder}: {e}") from None
    shapes = {}
    for n, t in planned_meta.items():
        shape = list(t.shape)
        if padded and n in _VOCAB_PARALLEL:
            shape[0] = padded_rows
        shapes[n] = (tuple(shape), t.dtype)
    check_against_model(model_cfg, {n: s for n, (s, _) in shapes.items()}, str(source.folder))
    return shapes


def hf_to_neox(
    hf_model: str,
    output_dir: str | Path,
    *,
    revision: str | None = None,
    tp: int = 1,
    pp: int = 1,
    iteration: int = 0,
    dtype: str = "auto",
    force: bool = False,
) -> HFToNeoxResult:
    from neox_core.config import config_to_dict
    from neox_core.models.hf_names import NameMappingError, from_hf, hf_architecture

    if tp < 1 or pp < 1 or iteration < 0:
        raise ConversionError("--tp and --pp must be >= 1 and --iteration >= 0")
    if dtype != "auto" and dtype not in TORCH_DTYPES:
        raise ConversionError(f"--dtype {dtype}: expected auto, fp32, bf16 or fp16")
    folder = resolve_model_dir(hf_model, revision)
    model_keys, model_type = neox_model_keys(folder)
    source = HFSource(folder)

    rows = int(model_keys.pop("vocab_size"))
    padded_rows = rows + (-rows % tp)
    padded_from = rows if padded_rows != rows else None

    final = Path(output_dir).absolute()
    with staged_output(final, force=force) as tmp:
        vocab_file, notes = _copy_tokenizer(folder, tmp, final, padded_rows, tp, model_keys)
        names = source.names()
        embed = next((n for n in _HF_EMBEDS if n in source), None)
        src_dtype = source.meta(embed).dtype if embed else torch.float32
        precision = precision_name(src_dtype, str(folder)) if dtype == "auto" else dtype
        yaml_text = render_yaml(
            model_keys,
            source=f"{hf_model}" + (f" at revision {revision}" if revision else ""),
            load_dir=final,
            iteration=iteration,
            tp=tp,
            pp=pp,
            dtype=precision,
            vocab_file=vocab_file,
        )
        yaml_path = tmp / YAML_NAME
        yaml_path.write_text(yaml_text, encoding="utf-8")
        cfg = load_written_yaml(yaml_path)
        cfg.parallel.tensor_parallel_size, cfg.parallel.pipe_parallel_size = tp, pp
        cfg.sources["parallel.tensor_parallel_size"] = f"{final / YAML_NAME}"
        cfg.sources["parallel.pipe_parallel_size"] = f"{final / YAML_NAME}"
        model_cfg = cfg.model
        check_tp_degree(model_cfg, tp, str(folder))
        try:
            arch = hf_architecture(model_cfg)
        except NameMappingError as e:
            raise ConversionError(f"{folder}: {e}") from None

        shapes = _planned_shapes(source, model_cfg, dtype, padded_rows, padded_from is not None)
        plan = plan_tensors(model_cfg, shapes)

        used: set[str] = set()

        def tensors():
            for name, t in units.stream(from_hf, model_cfg, names, source.read, source.meta, used):
                if padded_from is not None and name in _VOCAB_PARALLEL:
                    pad = torch.zeros(padded_rows - t.shape[0], *t.shape[1:], dtype=t.dtype)
                    t = torch.cat((t, pad), dim=0)
                yield name, t

        extra = {"hf/config.json": (folder / "config.json").read_bytes()}
        if (folder / "generation_config.json").is_file():
            extra["hf/generation_config.json"] = (folder / "generation_config.json").read_bytes()
        try:
            step = write_checkpoint(
                tmp,
                iteration,
                plan,
                tensors(),
                tp=tp,
                pp=pp,
                config=config_to_dict(cfg),
                config_files={YAML_NAME: yaml_text},
                extra_files=extra,
                desc=f"hf-to-neox {model_type} tp{tp} pp{pp}",
            )
        except NameMappingError as e:
            raise ConversionError(f"{folder}: {e}") from None
        unused = [n for n in names if n not in used and not n.endswith(RECOMPUTED_BUFFERS)]
        if model_cfg.tie_embeddings:
            unused = [n for n in unused if not _redundant_tied_head(source, n)]
        if unused:
            raise ConversionError(
                f"{folder}: tensors neox's model has no place for: {unused[:8]}"
                + (" ..." if len(unused) > 8 else "")
            )
        n_params = sum(math.prod(s) for s, _ in shapes.values())
    return HFToNeoxResult(
        final, final / step.name, final / YAML_NAME, arch, n_params, padded_from, notes
    )


def _redundant_tied_head(source: HFSource, name: str) -> bool:
    """A tied model's file may also store the head; it must then equal the embedding."""
    if name not in HF_HEADS:
        return False
    embed = next((n for n in _HF_EMBEDS if n in source), None)
    if embed is None or not torch.equal(source.read(name), source.read(embed)):
        raise ConversionError(
            f"{source.folder}: tie_word_embeddings is true but {name} differs from the "
            "input embedding"
        )
    return True


def describe(result: HFToNeoxResult) -> str:
    lines = [
        f"wrote {result.step_dir} ({result.architecture}, {result.num_parameters:,} parameters)",
        f"neox config: {result.yaml_path}",
    ]
    lines += [f"note: {n}" for n in result.notes]
    if result.padded_from is not None:
        lines.append(
            f"note: vocabulary padded from {result.padded_from} rows with zero rows to divide "
            "by --tp; exporting back keeps the padded size"
        )
    return "\n".join(lines)


__all__ = ["HFToNeoxResult", "describe", "hf_to_neox"]
