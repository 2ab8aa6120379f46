"""Translate merged GPT-NeoX keys onto neox's dataclass fields, remembering where each came from.

The input is the merged key set of all YAML files (later files win); the output is a flat
mapping of dotted field names ("model.hidden_size") to values, their sources ("file.yml:12"),
and the GPT-NeoX key that set each, so later checks can name it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from neox_core.config.errors import ConfigError
from neox_core.config.keys import (
    DIRECT,
    IGNORED,
    NOT_GPT_NEOX_KEYS,
    SPECIAL,
    UNSUPPORTED,
    all_known_keys,
    normalise_key,
)


@dataclass
class Entry:
    """One merged key: its value, where it was set, and how it was spelled there."""

    value: Any
    source: str  # "file.yml:LINE" or "override"
    spelled: str
    # position of the file that set it among the merged files (overrides come last)
    order: int = 0
    # nested key (e.g. ("params", "lr")) -> "file.yml:LINE", for blocks like `optimizer`
    nested_sources: dict[tuple[str, ...], str] = field(default_factory=dict)


@dataclass
class Translation:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # dotted field -> GPT-NeoX key
    ignored: dict[str, str] = field(default_factory=dict)
    # model-shaping keys that derive.py combines (intermediate size, activation, ...)
    shape: dict[str, Entry] = field(default_factory=dict)

    def set(self, dotted: str, value: Any, source: str, key: str) -> None:
        self.values[dotted] = value
        self.sources[dotted] = source
        self.keys[dotted] = key


_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list[str]": "a list of strings",
    "list[float]": "a list of numbers",
    "list[int]": "a list of integers",
    "switch": "true, false or auto",
}


def _coerce_scalar(value: Any, kind: str) -> Any:
    if kind == "int":
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError
        return value
    if kind == "switch":  # true | false | auto, as YAML booleans or strings
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
            return value.lower()
        raise TypeError
    raise AssertionError(kind)


def coerce(value: Any, kind: str, key: str, source: str) -> Any:
    """Check and convert one value to `kind`; the error names the key and where it was set."""
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key}: expected {_KIND_WORDS[base]}, got null")
    try:
        if base.startswith("list["):
            if not isinstance(value, list):
                raise TypeError
            inner = base[5:-1]
            return [_coerce_scalar(v, inner) for v in value]
        return _coerce_scalar(value, base)
    except TypeError:
        raise ConfigError(f"{source}: {key}: expected {_KIND_WORDS[base]}, got {value!r}") from None


def closest_key(key: str) -> str | None:
    found = difflib.get_close_matches(key, all_known_keys(), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key_error(entry: Entry, key: str) -> ConfigError:
    if key in NOT_GPT_NEOX_KEYS:
        return ConfigError(
            f"{entry.source}: unknown key {entry.spelled!r}: {NOT_GPT_NEOX_KEYS[key]}"
        )
    near = closest_key(key)
    hint = f"; did you mean {near!r}?" if near else ""
    return ConfigError(f"{entry.source}: unknown key {entry.spelled!r}{hint}")


def not_supported_error(
    source: str, key: str, value: Any, what: str, accepted: tuple[Any, ...] = ()
) -> ConfigError:
    """`accepted`: the values neox does take for `key`, named in the message."""
    msg = f"{source}: {key} = {value!r}: {what} is not yet supported by neox"
    if accepted:
        msg += f"; supported: {', '.join(repr(a) for a in accepted)}"
    return ConfigError(msg)


def _norm_choice(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def translate(merged: dict[str, Entry]) -> Translation:
    """Map every merged key; raises on unknown or unsupported keys."""
    out = Translation()
    merged = _one_data_source(merged, out)
    for key, entry in merged.items():
        if key in DIRECT:
            dotted, kind = DIRECT[key]
            if dotted in out.values and normalise_key(out.keys[dotted]) != key:
                other = out.keys[dotted]
                raise ConfigError(
                    f"{entry.source}: {key} and {other} ({out.sources[dotted]}) set the same "
                    "value; keep one"
                )
            value = coerce(entry.value, kind, entry.spelled, entry.source)
            out.set(dotted, value, entry.source, entry.spelled)
        elif key in SPECIAL:
            out.shape[key] = entry
        elif key in IGNORED:
            out.ignored[key] = f"{entry.source}: {IGNORED[key]}"
        elif key in UNSUPPORTED:
            harmless, what = UNSUPPORTED[key]
            if _norm_choice(entry.value) not in [_norm_choice(h) for h in harmless]:
                raise not_supported_error(entry.source, key, entry.value, what, harmless)
            out.ignored[key] = f"{entry.source}: set to its harmless value ({what} is off)"
        else:
            raise unknown_key_error(entry, key)
    _translate_special(out)
    return out


_SPLIT_PATH_KEYS = (
    "train_data_paths",
    "valid_data_paths",
    "test_data_paths",
    "train_data_weights",
    "valid_data_weights",
    "test_data_weights",
)


def _one_data_source(merged: dict[str, Entry], out: Translation) -> dict[str, Entry]:
    """`data_path` and train/valid/test_data_paths are two ways to say where the data is.

    Set in different files, the later file wins like any other key (a GPT-NeoX model file
    merged with a local setup file is the common case) and the earlier setting is listed as
    replaced. Set in the same file, it is an error naming both, as in GPT-NeoX.
    """
    single = merged.get("data_path")
    split = [merged[k] for k in _SPLIT_PATH_KEYS if k in merged]
    if single is None or single.value is None or not split:
        return merged
    latest_split = max(split, key=lambda e: e.order)
    if latest_split.order == single.order:
        raise ConfigError(
            f"{single.source}: data_path and {latest_split.spelled} ({latest_split.source}) "
            "are both set in this file: give either data_path (split by `split`) or "
            "train/valid/test_data_paths, not both (GPT-NeoX refuses this too)"
        )
    kept = dict(merged)
    if single.order > latest_split.order:
        for key in _SPLIT_PATH_KEYS:
            if key in kept:
                out.ignored[key] = (
                    f"{kept.pop(key).source}: replaced by data_path from a later file "
                    f"({single.source})"
                )
    else:
        kept.pop("data_path")
        out.ignored["data_path"] = (
            f"{single.source}: replaced by {latest_split.spelled} from a later file "
            f"({latest_split.source})"
        )
    return kept


def _get(out: Translation, key: str, kind: str, default: Any) -> tuple[Any, str | None]:
    entry = out.shape.get(key)
    if entry is None:
        return default, None
    return coerce(entry.value, kind, key, entry.source), entry.source


def _translate_special(out: Translation) -> None:
    _attention_kinds(out)
    _precision(out)
    _optimizer(out)
    _zero(out)
    _model_switches(out)
    _misc(out)


def _attention_kinds(out: Translation) -> None:
    """Refuse other layer kinds (Mamba, RWKV, sparse, ...) first: naming them explains the
    rest (a Mamba config has no pos_emb, for instance). derive.py expands and counts layers."""
    entry = out.shape.get("attention_config")
    if entry is None or not isinstance(entry.value, list):
        return
    for item in entry.value:
        if isinstance(item, list) and item and isinstance(item[0], list):
            for kind in item[0]:
                if isinstance(kind, str) and kind not in ("global", "flash"):
                    raise not_supported_error(
                        entry.source, "attention_config", kind, f"the layer type {kind!r}"
                    )


# -- precision -------------------------------------------------------------------------------

_FP16_BLOCK_KEYS = {
    "enabled",
    "fp16",
    "type",
    "loss_scale",
    "loss_scale_window",
    "initial_scale_power",
    "hysteresis",
    "min_loss_scale",
    "auto_cast",
    "consecutive_hysteresis",
}


def _block(entry: Entry, key: str) -> dict[str, Any]:
    if entry.value is None:
        return {}
    if not isinstance(entry.value, dict):
        raise ConfigError(f"{entry.source}: {key}: expected a mapping, got {entry.value!r}")
    return entry.value


def _nested_source(entry: Entry, *path: str) -> str:
    return entry.nested_sources.get(tuple(path), entry.source)


def _precision(out: Translation) -> None:
    choices: list[tuple[str, str, str]] = []  # (dtype, source, what set it)
    entry = out.shape.get("precision")
    if entry is not None and entry.value is not None:
        # fp8: bf16 everywhere, the decoder linears in float8 (neox, beyond GPT-NeoX)
        names = {"fp16": "fp16", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "fp8": "fp8"}
        if not isinstance(entry.value, str) or entry.value not in names:
            raise ConfigError(
                f"{entry.source}: precision = {entry.value!r}: expected one of fp16, bfloat16, "
                "fp32, fp8"
            )
        choices.append((names[entry.value], entry.source, "precision"))
    entry = out.shape.get("fp16")
    if entry is not None:
        block = _block(entry, "fp16")
        for sub in block:
            if sub not in _FP16_BLOCK_KEYS:
                near = difflib.get_close_matches(sub, sorted(_FP16_BLOCK_KEYS), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(
                    f"{_nested_source(entry, sub)}: unknown key {sub!r} in the fp16 block{hint}"
                )
        if block.get("consecutive_hysteresis"):
            src = _nested_source(entry, "consecutive_hysteresis")
            raise not_supported_error(
                src, "fp16.consecutive_hysteresis", True, "consecutive_hysteresis"
            )
        if "auto_cast" in block:
            src = _nested_source(entry, "auto_cast")
            coerce(block["auto_cast"], "bool", "fp16.auto_cast", src)
            out.ignored["fp16.auto_cast"] = (
                f"{src}: DeepSpeed casts floating-point model inputs to fp16; neox's inputs are "
                "token ids and autocast picks each op's dtype"
            )
        enabled = coerce(block.get("enabled", False), "bool", "fp16.enabled", entry.source)
        if block.get("type") == "bfloat16":
            choices.append(("bf16", _nested_source(entry, "type"), "fp16.type"))
        elif enabled:
            choices.append(("fp16", _nested_source(entry, "enabled"), "fp16.enabled"))
        scale_keys = {
            "loss_scale": ("precision.loss_scale", "float?"),
            "loss_scale_window": ("precision.loss_scale_window", "int"),
            "initial_scale_power": ("precision.initial_scale_power", "int"),
            "hysteresis": ("precision.hysteresis", "int"),
            "min_loss_scale": ("precision.min_loss_scale", "float"),
        }
        for sub, (dotted, kind) in scale_keys.items():
            if sub not in block:
                continue
            src = _nested_source(entry, sub)
            value = coerce(block[sub], kind, f"fp16.{sub}", src)
            if sub == "loss_scale" and value == 0:
                value = None  # DeepSpeed: 0 means dynamic loss scaling
            if dotted in out.values and out.values[dotted] != value:
                raise ConfigError(
                    f"{src}: fp16.{sub} = {value!r} disagrees with {out.keys[dotted]} = "
                    f"{out.values[dotted]!r} ({out.sources[dotted]})"
                )
            out.set(dotted, value, src, f"fp16.{sub}")
    entry = out.shape.get("bf16")
    if entry is not None:
        block = _block(entry, "bf16")
        for sub in block:
            src = _nested_source(entry, sub)
            if sub == "enabled":
                continue
            if sub == "bf16":
                coerce(block[sub], "bool", "bf16.bf16", src)
                out.ignored["bf16.bf16"] = (
                    f"{src}: not read by DeepSpeed or GPT-NeoX; bf16.enabled decides"
                )
            elif sub in _FP16_BLOCK_KEYS - {"enabled", "fp16", "type", "auto_cast"}:
                out.ignored[f"bf16.{sub}"] = f"{src}: bf16 needs no loss scaling (as in DeepSpeed)"
            else:
                near = difflib.get_close_matches(sub, ["enabled"], n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"{src}: unknown key {sub!r} in the bf16 block{hint}")
        if coerce(block.get("enabled", False), "bool", "bf16.enabled", entry.source):
            choices.append(("bf16", _nested_source(entry, "enabled"), "bf16.enabled"))
    entry = out.shape.get("amp")
    if entry is not None and entry.value is not None:
        block = _block(entry, "amp")
        for sub in block:
            if sub not in ("enabled", "opt_level"):
                raise not_supported_error(
                    _nested_source(entry, sub), f"amp.{sub}", block[sub], f"apex AMP's {sub}"
                )
        if coerce(block.get("enabled", False), "bool", "amp.enabled", entry.source):
            level = block.get("opt_level", "O1")
            src = _nested_source(entry, "opt_level")
            if level not in ("O0", "O1"):
                raise not_supported_error(
                    src, "amp.opt_level", level, "apex AMP levels that keep fp16 weights (O2, O3)"
                )
            # O1: fp16 autocast with fp32 weights and dynamic loss scaling, as neox's fp16
            choices.append(("fp16" if level == "O1" else "fp32", src, "amp.opt_level"))
    if choices:
        # fp8 is bf16 autocast plus float8 linears: it agrees with bf16 settings, not with others
        dtypes = {"bf16" if c[0] == "fp8" else c[0] for c in choices}
        if len(dtypes) > 1:
            listed = ", ".join(f"{what} -> {dt} ({src})" for dt, src, what in choices)
            raise ConfigError(f"conflicting precision settings: {listed}")
        _, src, what = choices[-1]
        out.set("precision.dtype", dtypes.pop(), src, what)
        fp8 = [(src, what) for dt, src, what in choices if dt == "fp8"]
        if fp8:
            out.set("precision.fp8_linear", True, fp8[0][0], fp8[0][1])
    entry = out.shape.get("dynamic_loss_scale")
    if entry is not None and entry.value is not None:
        dynamic = coerce(entry.value, "bool", "dynamic_loss_scale", entry.source)
        if dynamic != (out.values.get("precision.loss_scale") is None):
            raise ConfigError(
                f"{entry.source}: dynamic_loss_scale = {dynamic} disagrees with loss_scale"
            )


# -- optimizer -------------------------------------------------------------------------------

_ADAM_PARAMS = {"lr", "betas", "eps"}


def _optimizer(out: Translation) -> None:
    entry = out.shape.get("optimizer")
    if entry is not None and entry.value is not None:
        block = _block(entry, "optimizer")
        for sub in block:
            if sub not in ("type", "params"):
                raise ConfigError(
                    f"{_nested_source(entry, sub)}: unknown key {sub!r} in the optimizer block "
                    "(expected type, params)"
                )
        otype = block.get("type", "Adam")
        src = _nested_source(entry, "type")
        if not isinstance(otype, str) or otype.lower() not in ("adam", "adamw"):
            raise not_supported_error(src, "optimizer.type", otype, f"the optimizer {otype!r}")
        out.set("optimizer.type", otype.lower(), src, "optimizer.type")
        params = block.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{entry.source}: optimizer.params: expected a mapping")
        for sub, value in params.items():
            psrc = _nested_source(entry, "params", sub)
            name = f"optimizer.params.{sub}"
            if sub == "lr":
                out.set("optimizer.lr", coerce(value, "float", name, psrc), psrc, name)
            elif sub == "eps":
                out.set("optimizer.eps", coerce(value, "float", name, psrc), psrc, name)
            elif sub == "betas":
                betas = coerce(value, "list[float]", name, psrc)
                if len(betas) != 2:
                    raise ConfigError(f"{psrc}: {name}: expected two numbers, got {value!r}")
                out.set("optimizer.betas", tuple(betas), psrc, name)
            elif sub == "weight_decay":
                raise ConfigError(
                    f"{psrc}: {name}: GPT-NeoX takes weight decay from the top-level "
                    "weight_decay key; set it there"
                )
            elif sub in ("amsgrad",) and value is False:
                continue
            else:
                near = difflib.get_close_matches(sub, sorted(_ADAM_PARAMS), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"{psrc}: {name} is not an Adam parameter neox supports{hint}")
    entry = out.shape.get("lr")
    if entry is not None and entry.value is not None:
        lr = coerce(entry.value, "float", "lr", entry.source)
        if "optimizer.lr" in out.values and out.values["optimizer.lr"] != lr:
            raise ConfigError(
                f"{entry.source}: lr = {lr} disagrees with optimizer.params.lr = "
                f"{out.values['optimizer.lr']} ({out.sources['optimizer.lr']})"
            )
        if "optimizer.lr" not in out.values:
            out.set("optimizer.lr", lr, entry.source, "lr")


# -- ZeRO ------------------------------------------------------------------------------------

# DeepSpeed ZeRO tuning knobs: accepted, without effect, each with the reason
ZERO_NO_EFFECT: dict[str, str] = {
    "allgather_partitions": "FSDP2 always all-gathers parameters per layer (fully_shard unit)",
    "allgather_bucket_size": "FSDP2 all-gathers one layer's parameters at a time, not buckets",
    "reduce_scatter": "FSDP2 always reduce-scatters gradients under ZeRO 2/3",
    "reduce_bucket_size": "gradients are reduced per layer (FSDP2) or per DDP bucket (25 MiB)",
    "overlap_comm": "FSDP2 and DDP always overlap communication with backward compute",
    "contiguous_gradients": "FSDP2 keeps each rank's gradient shards in one flat buffer",
    "round_robin_gradients": "a DeepSpeed CPU-offload gradient ordering; FSDP2 has its own",
    "elastic_checkpoint": "neox checkpoints reshard on load at any layout",
    "load_from_fp32_weights": "neox checkpoints hold the fp32 weights the optimizer updates",
    "sub_group_size": "a DeepSpeed ZeRO-3 optimizer-step chunking; the step runs on local shards",
    "stage3_max_live_parameters": "FSDP2 keeps at most the current and prefetched layer gathered",
    "stage3_max_reuse_distance": "FSDP2 reshards each layer after its forward",
    "stage3_prefetch_bucket_size": "FSDP2 prefetches the next layer, not a byte budget",
    "stage3_param_persistence_threshold": "FSDP2 shards every parameter of a wrapped layer",
    "stage3_gather_16bit_weights_on_model_save": "neox saves each rank's shards, no gather",
    "stage3_gather_fp16_weights_on_model_save": "neox saves each rank's shards, no gather",
    "memory_efficient_linear": "a DeepSpeed ZeRO-3 linear-layer variant",
    "ignore_unused_parameters": "every parameter of the model is used",
    "legacy_stage1": "one stage-1 implementation",
    "cpu_offload_params": "an older spelling; use offload_param",
    "cpu_offload_use_pin_memory": "FSDP2's CPU offload pins its host memory itself",
}
_OFFLOAD_BLOCK_KEYS = {
    "device",
    "pin_memory",
    "buffer_count",
    "buffer_size",
    "fast_init",
    "nvme_path",
    "max_in_cpu",
    "pipeline_read",
    "pipeline_write",
    "ratio",
}


def _offload(entry: Entry, sub: str, value: Any) -> bool:
    """`offload_optimizer`/`offload_param`: a mapping with `device` cpu|none (or a bool)."""
    src = _nested_source(entry, sub)
    if isinstance(value, bool) or value is None:
        return bool(value)
    if not isinstance(value, dict):
        raise ConfigError(f"{src}: zero_optimization.{sub}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - _OFFLOAD_BLOCK_KEYS)
    if unknown:
        raise ConfigError(f"{src}: zero_optimization.{sub}: unknown key(s) {', '.join(unknown)}")
    device = str(value.get("device", "none")).lower()
    if device == "nvme":
        raise not_supported_error(src, f"zero_optimization.{sub}.device", "nvme", "NVMe offload")
    if device not in ("cpu", "none"):
        raise ConfigError(
            f"{src}: zero_optimization.{sub}.device = {device!r}: expected cpu or none"
        )
    return device == "cpu"


def _zero(out: Translation) -> None:
    entry = out.shape.get("zero_optimization")
    if entry is None or entry.value is None:
        return
    block = _block(entry, "zero_optimization")
    stage_src = _nested_source(entry, "stage")
    stage = coerce(block.get("stage", 0), "int", "zero_optimization.stage", stage_src)
    out.set("parallel.zero_stage", stage, stage_src, "zero_optimization.stage")
    for sub, value in block.items():
        src = _nested_source(entry, sub)
        if sub == "stage":
            continue
        if sub == "cpu_offload":
            on = coerce(value, "bool", "zero_optimization.cpu_offload", src)
            if on:
                out.set("parallel.offload_optimizer", True, src, "zero_optimization.cpu_offload")
        elif sub in ("offload_optimizer", "offload_param"):
            if _offload(entry, sub, value):
                out.set(f"parallel.{sub}", True, src, f"zero_optimization.{sub}")
        elif sub in ZERO_NO_EFFECT:
            out.ignored[f"zero_optimization.{sub}"] = f"{src}: {ZERO_NO_EFFECT[sub]}"
        else:
            near = difflib.get_close_matches(
                sub,
                ["stage", "cpu_offload", "offload_optimizer", "offload_param", *ZERO_NO_EFFECT],
                n=1,
            )
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{src}: unknown key zero_optimization.{sub!r}{hint}")


# -- model switches --------------------------------------------------------------------------


def _model_switches(out: Translation) -> None:
    pos_emb, src = _get(out, "pos_emb", "str", None)
    if pos_emb is None:
        raise ConfigError(
            "pos_emb is not set: GPT-NeoX then uses learned position embeddings, which neox "
            'does not support yet; set "pos_emb": "rotary"'
        )
    if pos_emb != "rotary":
        raise not_supported_error(src, "pos_emb", pos_emb, f"pos_emb {pos_emb!r}")

    norm, src = _get(out, "norm", "str", "layernorm")
    if norm not in ("layernorm", "rmsnorm"):
        raise not_supported_error(src or "default", "norm", norm, f"the norm {norm!r}")
    out.set("model.norm", norm, src or "default", "norm")
    eps_key = "layernorm_epsilon" if norm == "layernorm" else "rms_norm_epsilon"
    eps_default = 1e-5 if norm == "layernorm" else 1e-8
    eps, src = _get(out, eps_key, "float", eps_default)
    out.set("model.norm_eps", eps, src or "default", eps_key)

    tie_off, src = _get(out, "no_weight_tying", "bool", False)
    out.set("model.tie_embeddings", not tie_off, src or "default", "no_weight_tying")

    norm_bias, src = _get(out, "use_bias_in_norms", "bool", True)
    out.set("model.norm_bias", norm_bias, src or "default", "use_bias_in_norms")

    mlp_type, mlp_src = _get(out, "mlp_type", "str", "regular")
    activation, act_src = _get(out, "activation", "str", "gelu")
    if mlp_type == "regular":
        names = {"gelu": "gelu", "swiglu": "swiglu"}
        if activation not in names:
            raise not_supported_error(
                act_src, "activation", activation, f"the activation {activation!r}"
            )
        out.set("model.activation", names[activation], act_src or "default", "activation")
    elif mlp_type == "llama":
        if activation != "silu":
            raise not_supported_error(
                act_src or "default",
                "activation",
                activation,
                f'mlp_type "llama" with activation {activation!r} (GPT-NeoX uses "silu")',
            )
        out.set("model.activation", "swiglu", mlp_src, "mlp_type")
    else:
        raise not_supported_error(mlp_src, "mlp_type", mlp_type, f"mlp_type {mlp_type!r}")

    attn_bias, attn_src = _get(out, "use_bias_in_attn_linear", "bool", True)
    out.set("model.attention_bias", attn_bias, attn_src or "default", "use_bias_in_attn_linear")
    mlp_bias, mlp_bias_src = _get(out, "use_bias_in_mlp", "bool", True)
    if mlp_type == "llama":
        mlp_bias, mlp_bias_src = False, mlp_src  # GPT-NeoX's LLaMA MLP has no biases
    out.set("model.mlp_bias", mlp_bias, mlp_bias_src or "default", "use_bias_in_mlp")


def _misc(out: Translation) -> None:
    entry = out.shape.get("pipe_parallel_size")
    if entry is not None:
        pp = coerce(entry.value, "int", "pipe_parallel_size", entry.source)
        # GPT-NeoX: 0 and 1 both mean one stage (1 uses the pipeline engine with one stage)
        out.set("parallel.pipe_parallel_size", max(pp, 1), entry.source, "pipe_parallel_size")
    entry = out.shape.get("padded_vocab_size")
    if entry is not None and entry.value is not None:
        padded = coerce(entry.value, "int", "padded_vocab_size", entry.source)
        out.set("model.padded_vocab_size", padded, entry.source, "padded_vocab_size")
    entry = out.shape.get("data_impl")
    if entry is not None:
        if entry.value not in ("mmap", "infer"):
            raise not_supported_error(
                entry.source, "data_impl", entry.value, f"data_impl {entry.value!r}"
            )
        out.ignored["data_impl"] = f"{entry.source}: neox always reads mmap .bin/.idx datasets"
    entry = out.shape.get("checkpoint_num_layers")
    if entry is not None:
        n = coerce(entry.value, "int", "checkpoint_num_layers", entry.source)
        if n != 1 and not out.values.get("model.checkpoint_activations", False):
            out.ignored["checkpoint_num_layers"] = (
                f"{entry.source}: only read with checkpoint_activations, which is off"
            )
        elif n != 1:
            raise not_supported_error(
                entry.source, "checkpoint_num_layers", n, "checkpointing several layers at once"
            )
        else:
            out.ignored["checkpoint_num_layers"] = f"{entry.source}: neox checkpoints each layer"
    _deepspeed_blocks(out)


_DTYPE_NAMES = ("fp32", "bf16", "fp16", "float32", "bfloat16", "float16")


def _deepspeed_blocks(out: Translation) -> None:
    """DeepSpeed blocks with one harmless setting each: `data_types`, `deepspeed_extra_args`."""
    entry = out.shape.get("data_types")
    if entry is not None and entry.value is not None:
        for sub, value in _block(entry, "data_types").items():
            src = _nested_source(entry, sub)
            if sub != "grad_accum_dtype":
                raise not_supported_error(src, f"data_types.{sub}", value, f"DeepSpeed's {sub}")
            if value is not None and value not in _DTYPE_NAMES:
                raise ConfigError(
                    f"{src}: data_types.grad_accum_dtype = {value!r}: expected one of "
                    f"{', '.join(_DTYPE_NAMES)}"
                )
            out.ignored["data_types.grad_accum_dtype"] = (
                f"{src}: neox accumulates gradients in fp32, the dtype of its master weights "
                "(at least as precise; more memory than bf16/fp16 accumulation)"
            )
    entry = out.shape.get("deepspeed_extra_args")
    if entry is not None and entry.value is not None:
        for sub, value in _block(entry, "deepspeed_extra_args").items():
            src = _nested_source(entry, sub)
            if sub != "comms_logger":
                raise not_supported_error(
                    src, f"deepspeed_extra_args.{sub}", value, f"DeepSpeed's {sub}"
                )
            out.ignored["deepspeed_extra_args.comms_logger"] = (
                f"{src}: DeepSpeed's communication logger (a debugging aid); neox does not "
                "run DeepSpeed"
            )
