"""Values GPT-NeoX computes rather than reads: vocabulary padding, MLP width, batch sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from neox_core.config.errors import ConfigError
from neox_core.config.schema import NeoxConfig
from neox_core.config.translate import Translation, coerce, not_supported_error

DERIVED = "derived"

# GPT-NeoX's CharLevelTokenizer always has 512 ids.
_CHAR_LEVEL_VOCAB = 512


def pad_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel_size: int) -> int:
    """GPT-NeoX pads the vocabulary up to a multiple of divisible_by x TP."""
    multiple = divisible_by * tensor_parallel_size
    return int(math.ceil(vocab_size / multiple) * multiple)


def gpt_neox_mlp_width(
    hidden_size: int,
    gated: bool,
    intermediate_size: int | None = None,
    expansion_factor: float | None = None,
    multiple_of: int = 1,
) -> tuple[int, int]:
    """(width of the first MLP linear, width of the second's input) as GPT-NeoX sizes them.

    For gated activations the first linear holds both halves and GPT-NeoX shrinks the given
    size by 2/3 first, so `intermediate_size` in a GPT-NeoX file is three times the real width
    when `swiglu` is on (LLaMA-7B: 32768 -> 11008 with mlp_multiple_of 256).
    """
    if intermediate_size:
        ffn = intermediate_size
    elif expansion_factor:
        ffn = int(expansion_factor * hidden_size)
    else:
        ffn = 4 * hidden_size
    ffn_in = ffn
    if gated:
        ffn = int(ffn * 2 / 3)
        ffn_in = ffn // 2
    ffn = (2 * multiple_of) * ((ffn + 2 * multiple_of - 1) // (2 * multiple_of))
    ffn_in = multiple_of * ((ffn_in + multiple_of - 1) // multiple_of)
    return ffn, ffn_in


def llama_mlp_width(hidden_size: int, multiple_of: int = 256) -> int:
    """GPT-NeoX's `mlp_type: llama` sizing: 8/3 h rounded up to a multiple."""
    ffn = int(2 * hidden_size * 4 / 3)
    return multiple_of * ((ffn + multiple_of - 1) // multiple_of)


def vocab_size_from_file(tokenizer_type: str, vocab_file: str | None) -> int | None:
    """The tokenizer's size read from its file, as GPT-NeoX's tokenizer would report it."""
    if tokenizer_type == "CharLevelTokenizer":
        return _CHAR_LEVEL_VOCAB
    if not vocab_file or not Path(vocab_file).is_file():
        return None
    if tokenizer_type not in ("HFTokenizer", "GPT2BPETokenizer"):
        return None
    try:
        data = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"vocab_file {vocab_file}: cannot read it as JSON: {exc}") from exc
    if tokenizer_type == "GPT2BPETokenizer":
        return len(data)
    vocab = data.get("model", {}).get("vocab", {})
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
    ids |= {tok["id"] for tok in data.get("added_tokens", [])}
    return len(ids)


def _set(cfg: NeoxConfig, dotted: str, value: Any, source: str = DERIVED) -> None:
    group, name = dotted.split(".")
    setattr(getattr(cfg, group), name, value)
    cfg.sources[dotted] = source


def derive(cfg: NeoxConfig, tr: Translation) -> None:
    """Fill the derived fields of `cfg` in place."""
    m = cfg.model
    if m.num_kv_heads is None:
        _set(cfg, "model.num_kv_heads", m.num_attention_heads)
    if m.max_position_embeddings is None:
        _set(cfg, "model.max_position_embeddings", cfg.data.seq_length)
    _derive_mlp(cfg, tr)
    _derive_attention_config(cfg, tr)
    _check_attention_type(cfg, tr)
    _report_fusion(cfg, tr)
    _derive_vocab(cfg)
    _derive_activation_checkpointing(cfg)
    _set(cfg, "model.architecture", "llama" if m.activation == "swiglu" else "gpt_neox")
    _set(cfg, "precision.fp32_master_weights", cfg.precision.dtype != "fp32")
    _derive_zero_gather_dtype(cfg)
    if cfg.schedule.lr_decay_iters is None:
        _set(cfg, "schedule.lr_decay_iters", cfg.training.train_iters)
    _derive_batch(cfg, tr.keys)
    for split in ("train", "valid", "test"):
        paths = getattr(cfg.data, f"{split}_data_paths")
        if paths and getattr(cfg.data, f"{split}_data_weights") is None:
            _set(cfg, f"data.{split}_data_weights", [1.0] * len(paths))


def _derive_zero_gather_dtype(cfg: NeoxConfig) -> None:
    """`zero_gather_dtype: auto`: bf16 gathers where they apply, as DeepSpeed's bf16 mode
    gathers its bf16 weights (H200 x2: Pythia-1B ZeRO 1 +1.7 % tokens/s, the LLaMA-7B shape
    under ZeRO 3 +10 % and 12 GiB less peak memory per GPU; docs/architecture.md)."""
    p, prec = cfg.parallel, cfg.precision
    if p.zero_gather_dtype == "auto":
        bf16 = p.zero_stage in (1, 2, 3) and prec.dtype == "bf16" and not prec.fp8_linear
        _set(cfg, "parallel.zero_gather_dtype", "bf16" if bf16 else "fp32")


def _derive_activation_checkpointing(cfg: NeoxConfig) -> None:
    """One mode from two keys: GPT-NeoX's `checkpoint_activations` means full recomputation.

    `checkpoint_activations` then says whether whole layers are recomputed (FLOPs counting
    and the memory estimate read it); selective recomputation keeps the matmul outputs.
    """
    m = cfg.model
    if m.activation_checkpointing is None:
        _set(cfg, "model.activation_checkpointing", "full" if m.checkpoint_activations else "none")
    else:
        _set(cfg, "model.checkpoint_activations", m.activation_checkpointing == "full")


def _derive_mlp(cfg: NeoxConfig, tr: Translation) -> None:
    m = cfg.model
    shape = tr.shape

    def get(key: str, kind: str, default: Any) -> tuple[Any, str | None]:
        e = shape.get(key)
        if e is None or e.value is None:
            return default, None
        return coerce(e.value, kind, key, e.source), e.source

    size, size_src = get("intermediate_size", "int", None)
    factor, factor_src = get("expansion_factor", "float", None)
    multiple, multiple_src = get("mlp_multiple_of", "int", 1)
    mlp_type = shape["mlp_type"].value if "mlp_type" in shape else "regular"
    if size and factor:
        raise ConfigError(
            f"{factor_src}: set either intermediate_size ({size_src}) or expansion_factor, not both"
        )
    if mlp_type == "llama":
        if size or factor:
            raise not_supported_error(
                size_src or factor_src or "",
                "intermediate_size",
                size or factor,
                'a custom MLP size with mlp_type "llama" (use activation "swiglu" instead)',
            )
        llama_multiple, _ = get("llama_mlp_multiple_of", "int", 256)
        _set(cfg, "model.intermediate_size", llama_mlp_width(m.hidden_size, llama_multiple))
        return
    gated = m.activation == "swiglu"
    if multiple < 1:
        raise ConfigError(f"{multiple_src}: mlp_multiple_of = {multiple}: must be at least 1")
    first, second = gpt_neox_mlp_width(m.hidden_size, gated, size, factor, multiple)
    if (gated and first != 2 * second) or (not gated and first != second):
        hint = ""
        if gated and size:
            hint = (
                "; GPT-NeoX would stop on this too (its two projections would not fit). If "
                f"{size} is meant as the SwiGLU width itself (as HF configs give it), set "
                f"intermediate_size: {3 * size} (GPT-NeoX takes 2/3 of it and halves it), or "
                f"mlp_multiple_of: {size}"
            )
        raise ConfigError(
            f"{size_src or multiple_src or 'mlp sizing'}: intermediate_size/mlp_multiple_of "
            f"give GPT-NeoX MLP widths {first} and {second}, which do not fit together "
            f"({'gated: first must be twice the second' if gated else 'must be equal'}){hint}"
        )
    _set(cfg, "model.intermediate_size", second)


_ATTENTION_OK = ("global", "flash")


def _derive_attention_config(cfg: NeoxConfig, tr: Translation) -> None:
    entry = tr.shape.get("attention_config")
    if entry is None or entry.value is None:
        return
    value = entry.value
    expanded: list[str] = []
    ok_shape = isinstance(value, list)
    if ok_shape:
        for item in value:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], list)
                and all(isinstance(t, str) for t in item[0])
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
            ):
                ok_shape = False
                break
            expanded.extend(item[0] * item[1])
    if not ok_shape:
        raise ConfigError(
            f"{entry.source}: attention_config = {value!r}: expected a list of "
            '[[types...], repeat] pairs such as [[["flash"], 12]]'
        )
    if len(expanded) != cfg.model.num_layers:
        raise ConfigError(
            f"{entry.source}: attention_config expands to {len(expanded)} layers but "
            f"num_layers is {cfg.model.num_layers}"
        )
    for kind in expanded:
        if kind not in _ATTENTION_OK:
            raise not_supported_error(
                entry.source, "attention_config", kind, f"attention type {kind!r}"
            )
    tr.ignored["attention_config"] = (
        f"{entry.source}: global/flash attention both run as causal "
        "scaled_dot_product_attention (flash kernel on GPU)"
    )


# GPT-NeoX's llemma/34B.yml carries `attention_type`; GPT-NeoX itself never reads it (the
# number of key/value heads decides). neox accepts the values that describe num_kv_heads.
_ATTENTION_TYPES = {
    "multihead": lambda heads, kv: kv == heads,
    "groupedquery": lambda heads, kv: 1 <= kv < heads,
    "multiquery": lambda heads, kv: kv == 1,
}


def _check_attention_type(cfg: NeoxConfig, tr: Translation) -> None:
    entry = tr.shape.get("attention_type")
    if entry is None or entry.value is None:
        return
    kind = coerce(entry.value, "str", "attention_type", entry.source)
    heads, kv = cfg.model.num_attention_heads, cfg.model.num_kv_heads
    if kind not in _ATTENTION_TYPES:
        raise ConfigError(
            f"{entry.source}: attention_type = {kind!r}: expected one of "
            f"{', '.join(_ATTENTION_TYPES)} (attention kinds per layer go in attention_config)"
        )
    if not _ATTENTION_TYPES[kind](heads, kv):
        raise ConfigError(
            f"{entry.source}: attention_type = {kind!r} does not describe num_kv_heads = {kv} "
            f"with num_attention_heads = {heads} ({cfg.sources.get('model.num_kv_heads')})"
        )
    tr.ignored["attention_type"] = (
        f"{entry.source}: not read by GPT-NeoX; num_kv_heads ({kv}) already makes it {kind}"
    )


def _report_fusion(cfg: NeoxConfig, tr: Translation) -> None:
    from neox_core.config.fusion import FUSION_KEYS, inactive_reason

    for key in FUSION_KEYS:
        if getattr(cfg.fusion, key):
            why = inactive_reason(key)
            if why is not None:
                source = cfg.sources.get(f"fusion.{key}", "config")
                tr.ignored[key] = f"{source}: fusion switch on, without effect yet: {why}"


def _derive_vocab(cfg: NeoxConfig) -> None:
    m = cfg.model
    from_file = vocab_size_from_file(cfg.data.tokenizer_type, cfg.data.vocab_file)
    if m.vocab_size is None and from_file is not None:
        _set(cfg, "model.vocab_size", from_file, f"derived from {cfg.data.vocab_file}")
    elif m.vocab_size is not None and from_file is not None and from_file != m.vocab_size:
        raise ConfigError(
            f"{cfg.sources.get('model.vocab_size')}: vocab_size = {m.vocab_size} but the "
            f"tokenizer {cfg.data.vocab_file} has {from_file} tokens"
        )
    tp = cfg.parallel.tensor_parallel_size
    for dotted, key, value in (
        (
            "model.make_vocab_size_divisible_by",
            "make_vocab_size_divisible_by",
            m.make_vocab_size_divisible_by,
        ),
        ("parallel.tensor_parallel_size", "model_parallel_size", tp),
    ):
        if value < 1:  # the padding below divides by their product
            raise ConfigError(f"{cfg.sources.get(dotted)}: {key} = {value}: must be positive")
    if m.vocab_size is not None:
        padded = pad_vocab_size(m.vocab_size, m.make_vocab_size_divisible_by, tp)
        if m.padded_vocab_size is not None and m.padded_vocab_size != padded:
            raise ConfigError(
                f"{cfg.sources.get('model.padded_vocab_size')}: padded_vocab_size = "
                f"{m.padded_vocab_size} but vocab size {m.vocab_size} padded to a multiple of "
                f"{m.make_vocab_size_divisible_by} x {tp} is {padded}"
            )
        _set(cfg, "model.padded_vocab_size", padded)
    elif m.padded_vocab_size is None:
        raise ConfigError(
            "cannot size the vocabulary: set vocab_size (the tokenizer's size) or point "
            f"vocab_file at an existing tokenizer file (vocab_file = {cfg.data.vocab_file!r} "
            f"from {cfg.sources.get('data.vocab_file', 'default')}, "
            f"tokenizer_type = {cfg.data.tokenizer_type!r})"
        )


def _derive_batch(cfg: NeoxConfig, keys: dict[str, str]) -> None:
    """GPT-NeoX's calculate_batch_parameters: any two of the three give the third."""
    t = cfg.training
    dp_given = cfg.sources.get("parallel.data_parallel_size", "default") != "default"
    dp = cfg.parallel.data_parallel_size or 1
    train, micro, accum = t.train_batch_size, t.micro_batch_size, t.gradient_accumulation_steps
    accum_given = cfg.sources.get("training.gradient_accumulation_steps", "default") != "default"
    micro_given = cfg.sources.get("training.micro_batch_size", "default") != "default"
    for dotted, key, value in (
        ("training.train_batch_size", "train_batch_size", train),
        ("training.micro_batch_size", "train_micro_batch_size_per_gpu", micro),
        ("training.gradient_accumulation_steps", "gradient_accumulation_steps", accum),
    ):
        if value is not None and value < 1:  # before they divide each other below
            spelled = keys.get(dotted, key)  # as the file wrote it (`gas`, `train-batch-size`)
            raise ConfigError(f"{cfg.sources.get(dotted)}: {spelled} = {value}: must be positive")
    if train is not None and micro_given and accum_given:
        if not dp_given and micro * accum > 0 and train % (micro * accum) == 0:
            dp = train // (micro * accum)
            _set(cfg, "parallel.data_parallel_size", dp)
    elif train is not None and micro_given:
        accum = train // micro // dp
        _set(cfg, "training.gradient_accumulation_steps", accum)
    elif train is not None and accum_given:
        micro = train // dp // accum
        _set(cfg, "training.micro_batch_size", micro)
    elif train is not None:
        accum, micro = 1, train // dp
        _set(cfg, "training.gradient_accumulation_steps", 1)
        _set(cfg, "training.micro_batch_size", micro)
    else:
        train = micro * accum * dp
        _set(cfg, "training.train_batch_size", train)
    if cfg.parallel.data_parallel_size != dp:
        _set(cfg, "parallel.data_parallel_size", dp)
    if micro < 1 or accum < 1 or train != micro * accum * dp:
        raise ConfigError(
            f"train_batch_size ({train}, {cfg.sources.get('training.train_batch_size')}) must "
            f"equal train_micro_batch_size_per_gpu ({micro}, "
            f"{cfg.sources.get('training.micro_batch_size')}) x gradient_accumulation_steps "
            f"({accum}, {cfg.sources.get('training.gradient_accumulation_steps')}) x "
            f"data-parallel size ({dp})"
        )
