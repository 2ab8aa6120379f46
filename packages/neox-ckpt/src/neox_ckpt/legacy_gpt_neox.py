"""`neox-ckpt import-gpt-neox`: a legacy GPT-NeoX (DeepSpeed) checkpoint -> neox format v1.

Two legacy layouts hold the weights of `<save>/global_step<N>/`:
- pipeline (pipe-parallel-size >= 1): `layer_<LL>-model_<TT>-model_states.pt`, one plain dict
  of tensors per pipeline layer LL and tensor-parallel rank TT. LL 00 is the embedding, the
  transformer layers follow (after a parameter-less block), then the final norm and the head;
- sequential (pipe-parallel-size 0): `mp_rank_<TT>_model_states.pt` whose `module` dict holds
  `sequential.<LL>.<name>` with the same layer numbering.
Layers are told apart by their contents, not by fixed offsets. Tensor-parallel pieces merge
as GPT-NeoX splits them: column-parallel (QKV, h->4h, w1/w3, embeddings, head) along dim 0,
row-parallel weights along dim 1; row-parallel biases are summed when `gpt_j_residual` (each
rank adds its share before the single all-reduce) and replicated otherwise; norms replicated.
Weights only: optimizer and RNG states are not imported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neox_ckpt.errors import ConversionError
from neox_ckpt.model_layout import RECOMPUTED_BUFFERS, plan_tensors
from neox_ckpt.neox_reader import check_step_number, step_dir_in
from neox_ckpt.neox_writer import write_checkpoint
from neox_ckpt.output_dir import staged_output
from neox_ckpt.torch_files import load_weights_only
from neox_ckpt.tp_rules import check_tp_degree

_LAYER_FILE = re.compile(r"^layer_(\d+)-model_(\d+)-model_states\.pt$")
_MP_FILE = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
_SEQ_KEY = re.compile(r"^sequential\.(\d+)\.(.+)$")

# legacy name inside a transformer layer -> (neox name, how TP pieces merge)
_LAYER_NAMES = {
    "input_layernorm.weight": ("input_norm.weight", "replicated"),
    "input_layernorm.bias": ("input_norm.bias", "replicated"),
    "input_layernorm.scale": ("input_norm.weight", "replicated"),
    "post_attention_layernorm.weight": ("post_attention_norm.weight", "replicated"),
    "post_attention_layernorm.bias": ("post_attention_norm.bias", "replicated"),
    "post_attention_layernorm.scale": ("post_attention_norm.weight", "replicated"),
    "attention.query_key_value.weight": ("attention.qkv.weight", "dim0"),
    "attention.query_key_value.bias": ("attention.qkv.bias", "dim0"),
    "attention.dense.weight": ("attention.out.weight", "dim1"),
    "attention.dense.bias": ("attention.out.bias", "row_bias"),
    "mlp.dense_h_to_4h.weight": ("mlp.fc_in.weight", "dim0"),
    "mlp.dense_h_to_4h.bias": ("mlp.fc_in.bias", "dim0"),
    "mlp.dense_4h_to_h.weight": ("mlp.fc_out.weight", "dim1"),
    "mlp.dense_4h_to_h.bias": ("mlp.fc_out.bias", "row_bias"),
    # GPT-NeoX's LLaMA MLP: w1 = gate, w3 = up, w2 = down
    "mlp.w1.weight": ("mlp.gate", "dim0"),
    "mlp.w3.weight": ("mlp.up", "dim0"),
    "mlp.w2.weight": ("mlp.fc_out.weight", "dim1"),
}


@dataclass
class LegacyLayout:
    step_dir: Path
    kind: str  # "pipeline" | "sequential"
    tp: int
    # pipeline layer number -> {legacy name: [file per TP rank]} (sequential: one file per rank)
    layers: dict[int, dict[str, list[Path]]]


def find_step_dir(path: str | Path, iteration: int | None) -> Path:
    """`path` itself if it holds model states, else its `global_step<iteration>` or latest step."""
    p = Path(path)
    if not p.is_dir():
        raise ConversionError(f"{p} is not a directory")
    if any(p.glob("*model_states.pt")):
        check_step_number(p, iteration)
        return p
    if iteration is not None or (p / "latest").is_file():
        return step_dir_in(p, iteration)
    return p  # scan() names the files it expected


def scan(step_dir: Path) -> LegacyLayout:
    """Which legacy layout `step_dir` holds, its TP degree and which file has which tensor."""
    layer_files: dict[int, dict[int, Path]] = defaultdict(dict)
    mp_files: dict[int, Path] = {}
    for f in step_dir.iterdir():
        if m := _LAYER_FILE.match(f.name):
            layer_files[int(m.group(1))][int(m.group(2))] = f
        elif m := _MP_FILE.match(f.name):
            mp_files[int(m.group(1))] = f
    if layer_files:
        tps = {len(ranks) for ranks in layer_files.values()}
        tp = max(tps)
        bad = [n for n, ranks in layer_files.items() if sorted(ranks) != list(range(tp))]
        if bad:
            raise ConversionError(f"{step_dir}: layers {bad} lack files for some of {tp} TP ranks")
        layers: dict[int, dict[str, list[Path]]] = {}
        for n in sorted(layer_files):
            ranks = layer_files[n]
            keys = load_weights_only(ranks[0])
            if not isinstance(keys, dict):
                raise ConversionError(f"{ranks[0]}: expected a dict of tensors")
            layers[n] = {k: [ranks[r] for r in range(tp)] for k in keys}
        return LegacyLayout(step_dir, "pipeline", tp, layers)
    if mp_files:
        tp = len(mp_files)
        if sorted(mp_files) != list(range(tp)):
            raise ConversionError(
                f"{step_dir}: mp_rank files {sorted(mp_files)} are not 0..{tp - 1}"
            )
        module = _module(mp_files[0])
        layers = defaultdict(dict)
        for key in module:
            m = _SEQ_KEY.match(key)
            if not m:
                raise ConversionError(f"{mp_files[0]}: unexpected key {key!r} in module")
            layers[int(m.group(1))][m.group(2)] = [mp_files[r] for r in range(tp)]
        return LegacyLayout(step_dir, "sequential", tp, dict(sorted(layers.items())))
    raise ConversionError(
        f"{step_dir}: no layer_XX-model_YY-model_states.pt or mp_rank_XX_model_states.pt files"
    )


def _module(path: Path) -> dict[str, torch.Tensor]:
    state = load_weights_only(path)
    module = state.get("module") if isinstance(state, dict) else None
    if not isinstance(module, dict):
        raise ConversionError(
            f"{path}: no 'module' dict of weights (pipeline checkpoints keep "
            "weights in layer_*.pt files)"
        )
    return module


class _Pieces:
    """Reads the TP pieces of legacy tensors; pipeline files are kept for one layer at a time."""

    def __init__(self, layout: LegacyLayout) -> None:
        self.layout = layout
        self._layer: int | None = None
        self._cache: dict[Path, dict[str, Any]] = {}

    def get(self, layer: int, key: str) -> list[torch.Tensor]:
        pipeline = self.layout.kind == "pipeline"
        if pipeline and layer != self._layer:
            self._cache.clear()
            self._layer = layer
        out = []
        for f in self.layout.layers[layer][key]:
            if f not in self._cache:
                self._cache[f] = load_weights_only(f) if pipeline else _module(f)
            out.append(self._cache[f][key if pipeline else f"sequential.{layer}.{key}"])
        return out


def _merge(pieces: list[torch.Tensor], how: str, gpt_j_residual: bool, where: str) -> torch.Tensor:
    if how == "dim0":
        return torch.cat(pieces, dim=0)
    if how == "dim1":
        return torch.cat(pieces, dim=1)
    if how == "row_bias" and gpt_j_residual:
        total = pieces[0].float()
        for p in pieces[1:]:
            total = total + p.float()
        return total.to(pieces[0].dtype)
    first = pieces[0]
    for p in pieces[1:]:
        if not torch.equal(p, first):  # GPT-NeoX's own converter averages drifted copies
            return torch.stack([q.float() for q in pieces]).mean(0).to(first.dtype)
    return first


def _qkv_to_neox(t: torch.Tensor, cfg: Any, where: str) -> torch.Tensor:
    """GPT-NeoX's QKV rows (per query head: q_h, then its share of k and of v) -> neox's."""
    from neox_core.models.hf_names import fuse_qkv

    heads = cfg.num_attention_heads
    kv = cfg.num_kv_heads or heads
    d = cfg.hidden_size // heads
    if (d * kv) % heads:
        raise ConversionError(
            f"{where}: cannot share {kv} kv heads of size {d} among {heads} heads"
        )
    share = d * kv // heads
    rest = t.shape[1:]
    x = t.reshape(heads, d + 2 * share, *rest)
    q, k, v = x.split([d, share, share], dim=1)
    return fuse_qkv(
        q.reshape(heads * d, *rest), k.reshape(kv * d, *rest), v.reshape(kv * d, *rest), cfg
    )


def _classify(layout: LegacyLayout) -> tuple[int, list[int], int | None, int | None]:
    """(embedding layer, transformer layers, final-norm layer, head layer or None if tied)."""
    order = sorted(layout.layers)
    embed = next((n for n in order if "word_embeddings.weight" in layout.layers[n]), None)
    if embed is None:
        raise ConversionError(f"{layout.step_dir}: no layer holds word_embeddings.weight")
    blocks = [n for n in order if "attention.query_key_value.weight" in layout.layers[n]]
    norm = next(
        (
            n
            for n in order
            if n > embed
            and n not in blocks
            and any(k.startswith("norm.") for k in layout.layers[n])
        ),
        None,
    )
    head = next((n for n in order if "final_linear.weight" in layout.layers[n]), None)
    return embed, blocks, norm, head


def import_gpt_neox(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    config_paths: list[str] | None = None,
    iteration: int | None = None,
    tp: int = 1,
    pp: int = 1,
    force: bool = False,
) -> Path:
    from neox_core.config import ConfigError, config_to_dict, load_config
    from neox_core.models import build_model

    step_dir = find_step_dir(input_dir, iteration)
    m = re.match(r"^global_step(\d+)$", step_dir.name)
    it = iteration if iteration is not None else (int(m.group(1)) if m else 0)
    layout = scan(step_dir)
    pieces = _Pieces(layout)
    embed_layer, blocks, norm_layer, head_layer = _classify(layout)
    rows = sum(p.shape[0] for p in pieces.get(embed_layer, "word_embeddings.weight"))

    paths = config_paths or sorted(str(p) for p in (step_dir / "configs").glob("*.y*ml"))
    if not paths:
        raise ConversionError(
            f"{step_dir}: no configs/*.yml saved with the checkpoint; pass the run's YAML with --config"
        )
    try:
        cfg = load_config(
            paths,
            overrides={
                "model_parallel_size": 1,
                "pipe_parallel_size": 1,
                # the stored rows are the padded vocabulary; keep exactly that size
                "vocab_size": rows,
                "make_vocab_size_divisible_by": 1,
                "padded_vocab_size": rows,
            },
        )
    except ConfigError as e:
        raise ConversionError(f"config of {step_dir}: {e}") from None
    mc = cfg.model
    if len(blocks) != mc.num_layers:
        raise ConversionError(
            f"{step_dir}: {len(blocks)} transformer layers in the files, config says {mc.num_layers}"
        )
    check_tp_degree(mc, tp, str(step_dir))
    cfg.parallel.tensor_parallel_size, cfg.parallel.pipe_parallel_size = tp, pp
    model_state = build_model(mc, seed=None, device="meta").state_dict()
    dtype = pieces.get(embed_layer, "word_embeddings.weight")[0].dtype
    plan = plan_tensors(mc, {n: (tuple(t.shape), dtype) for n, t in model_state.items()})
    gj = mc.gpt_j_residual

    def layer_tensors(i: int, n: int):
        where = f"{step_dir} layer {n}"
        out: dict[str, torch.Tensor] = {}
        for key in layout.layers[n]:
            if key.endswith(RECOMPUTED_BUFFERS):
                continue
            if key not in _LAYER_NAMES:
                raise ConversionError(f"{where}: unknown tensor {key!r}")
            ours, how = _LAYER_NAMES[key]
            out[ours] = _merge(pieces.get(n, key), how, gj, f"{where}: {key}")
        for suffix in ("weight", "bias"):
            name = f"attention.qkv.{suffix}"
            if name in out:
                out[name] = _qkv_to_neox(out[name], mc, where)
        if "mlp.up" in out:
            out["mlp.fc_in.weight"] = torch.cat((out.pop("mlp.up"), out.pop("mlp.gate")), dim=0)
        for name, t in out.items():
            yield f"layers.{i}.{name}", t

    def tensors():
        yield "embed.weight", torch.cat(pieces.get(embed_layer, "word_embeddings.weight"), dim=0)
        for i, n in enumerate(blocks):
            yield from layer_tensors(i, n)
        if norm_layer is None:
            raise ConversionError(f"{step_dir}: no final norm layer found")
        for key in layout.layers[norm_layer]:
            suffix = key.rsplit(".", 1)[1]
            ours = "final_norm.weight" if suffix in ("weight", "scale") else "final_norm.bias"
            yield ours, _merge(pieces.get(norm_layer, key), "replicated", gj, key)
        if not mc.tie_embeddings:
            if head_layer is None:
                raise ConversionError(f"{step_dir}: untied model but no final_linear.weight found")
            yield "lm_head.weight", torch.cat(pieces.get(head_layer, "final_linear.weight"), dim=0)

    config_files = {Path(p).name: Path(p).read_text(encoding="utf-8") for p in paths}
    with staged_output(output_dir, force=force) as tmp:
        step = write_checkpoint(
            tmp,
            it,
            plan,
            tensors(),
            tp=tp,
            pp=pp,
            config=config_to_dict(cfg),
            config_files=config_files,
            desc=f"import-gpt-neox ({layout.kind}, tp {layout.tp})",
        )
    return Path(output_dir) / step.name
