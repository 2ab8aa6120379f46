"""Range and choice checks on the resolved config; each message names the key and its source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neox_core.config.errors import ConfigError
from neox_core.config.schema import NeoxConfig

INIT_METHODS = (
    "normal",
    "scaled_normal",
    "orthogonal",
    "scaled_orthogonal",
    "xavier_uniform",
    "xavier_normal",
    "wang_init",
    "small_init",
)
TOKENIZER_TYPES = (
    "GPT2BPETokenizer",
    "HFTokenizer",
    "HFGPT2Tokenizer",
    "SPMTokenizer",
    "CharLevelTokenizer",
    "TiktokenTokenizer",
)

_CHOICES: dict[str, tuple[str, ...]] = {
    "model.init_method": INIT_METHODS,
    "model.output_layer_init_method": INIT_METHODS,
    "schedule.lr_decay_style": ("linear", "cosine", "constant", "inverse_sqrt"),
    "training.on_nan": ("skip", "stop"),
    "data.pack_impl": ("packed", "pack_until_overflow", "unpacked"),
    "data.tokenizer_type": TOKENIZER_TYPES,
    "logging.wandb_mode": ("online", "offline", "disabled"),
    "precision.dtype": ("fp32", "bf16", "fp16"),
    "launcher.launcher": ("pdsh", "openmpi", "mvapich", "slurm"),
}

# GPT-NeoX choices that neox does not implement yet
_NOT_YET: dict[str, tuple[str, ...]] = {
    "schedule.lr_decay_style": ("exponential", "infinite_cosine", "infinite_inv_sqrt"),
}

_POSITIVE = (
    "model.num_layers",
    "model.hidden_size",
    "model.num_attention_heads",
    "model.num_kv_heads",
    "model.intermediate_size",
    "model.max_position_embeddings",
    "model.vocab_size",
    "model.make_vocab_size_divisible_by",
    "model.rotary_emb_base",
    "data.seq_length",
    "training.micro_batch_size",
    "training.gradient_accumulation_steps",
    "training.eval_interval",
    "logging.log_interval",
    "parallel.tensor_parallel_size",
    "parallel.pipe_parallel_size",
    "parallel.data_parallel_size",
    "precision.loss_scale_window",
)
_NON_NEGATIVE = (
    "training.train_iters",
    "training.eval_iters",
    "training.seed",
    "schedule.lr_decay_iters",
    "optimizer.weight_decay",
    "optimizer.clip_grad",
    "schedule.min_lr",
    "data.num_workers",
    "precision.hysteresis",
    "precision.initial_scale_power",
    "checkpoint.keep_last_n_checkpoints",
    "checkpoint.iteration",
)


def _where(cfg: NeoxConfig, keys: dict[str, str], dotted: str) -> str:
    source = cfg.sources.get(dotted, "default")
    key = keys.get(dotted, dotted)
    return f"{source}: {key}"


def _value(cfg: NeoxConfig, dotted: str) -> Any:
    group, name = dotted.split(".")
    return getattr(getattr(cfg, group), name)


def validate(cfg: NeoxConfig, keys: dict[str, str]) -> None:
    """Raise ConfigError on the first value out of range; `keys` maps fields to GPT-NeoX keys."""

    def fail(dotted: str, why: str) -> None:
        raise ConfigError(f"{_where(cfg, keys, dotted)} = {_value(cfg, dotted)!r}: {why}")

    def check(dotted: str, ok: Callable[[Any], bool], why: str) -> None:
        value = _value(cfg, dotted)
        if value is not None and not ok(value):
            fail(dotted, why)

    for dotted, values in _NOT_YET.items():
        check(dotted, lambda v, bad=values: v not in bad, "not yet supported by neox")
    for dotted, choices in _CHOICES.items():
        check(dotted, lambda v, c=choices: v in c, f"expected one of {', '.join(choices)}")
    for dotted in _POSITIVE:
        check(dotted, lambda v: v > 0, "must be positive")
    for dotted in _NON_NEGATIVE:
        check(dotted, lambda v: v >= 0, "must not be negative")

    m = cfg.model
    if m.hidden_size % m.num_attention_heads:
        fail(
            "model.hidden_size",
            f"must be divisible by num_attention_heads ({m.num_attention_heads})",
        )
    if m.num_attention_heads % m.num_kv_heads:
        fail("model.num_kv_heads", f"must divide num_attention_heads ({m.num_attention_heads})")
    check("model.rotary_pct", lambda v: 0 < v <= 1, "must be in (0, 1]")
    head_dim = m.hidden_size // m.num_attention_heads
    if int(head_dim * m.rotary_pct) % 2:
        fail(
            "model.rotary_pct",
            f"rotates int({head_dim} x {m.rotary_pct}) = {int(head_dim * m.rotary_pct)} "
            "dimensions per head; that must be even",
        )
    check("model.norm_eps", lambda v: v > 0, "must be positive")
    check("model.init_std", lambda v: v > 0, "must be positive")
    check("model.hidden_dropout", lambda v: 0 <= v < 1, "must be in [0, 1)")
    check("model.attention_dropout", lambda v: 0 <= v < 1, "must be in [0, 1)")
    if m.max_position_embeddings < cfg.data.seq_length:
        fail(
            "model.max_position_embeddings", f"must be at least seq_length ({cfg.data.seq_length})"
        )

    o = cfg.optimizer
    check("optimizer.type", lambda v: v in ("adam", "adamw"), "expected adam or adamw")
    check("optimizer.lr", lambda v: v > 0, "must be positive")
    check("optimizer.eps", lambda v: v > 0, "must be positive")
    check("optimizer.betas", lambda v: all(0 <= b < 1 for b in v), "each beta must be in [0, 1)")
    if cfg.schedule.min_lr > o.lr:
        fail("schedule.min_lr", f"must not exceed lr ({o.lr})")
    check("schedule.warmup", lambda v: 0 <= v <= 1, "is a fraction of lr_decay_iters, in [0, 1]")
    check("precision.loss_scale", lambda v: v > 0, "must be positive (0 or null: dynamic)")
    check("data.weighted_sampler_alpha", lambda v: v >= 0, "must not be negative")
    check("checkpoint.checkpoint_factor", lambda v: v > 0, "must be positive")
    check("checkpoint.extra_save_iters", lambda v: all(i >= 0 for i in v), "must be >= 0")

    if cfg.parallel.pipe_parallel_size > 1:
        fail(
            "parallel.pipe_parallel_size",
            "pipeline parallelism is not yet supported by neox (use 0 or 1; tensor parallelism "
            "via model_parallel_size and ZeRO via zero_optimization are)",
        )
    check("parallel.zero_stage", lambda v: v in (0, 1, 2, 3), "expected a ZeRO stage 0, 1, 2 or 3")
    if cfg.parallel.offload_param and cfg.parallel.zero_stage != 3:
        fail("parallel.offload_param", "parameter offload needs ZeRO stage 3")
    if cfg.parallel.offload_optimizer and cfg.parallel.zero_stage == 0:
        fail("parallel.offload_optimizer", "optimizer offload needs ZeRO stage 1, 2 or 3")
    if cfg.parallel.sequence_parallel and cfg.parallel.tensor_parallel_size == 1:
        fail("parallel.sequence_parallel", "sequence parallelism needs model_parallel_size > 1")
    from neox_core.distributed.parallel_dims import check_model_split

    check_model_split(cfg, keys)

    _validate_data(cfg, keys)


def _validate_data(cfg: NeoxConfig, keys: dict[str, str]) -> None:
    d = cfg.data
    given = {s: getattr(d, f"{s}_data_paths") for s in ("train", "valid", "test")}
    if any(v is not None for v in given.values()):
        missing = [s for s, v in given.items() if v is None]
        if missing:
            raise ConfigError(
                f"{cfg.sources.get('data.train_data_paths', 'config')}: train/valid/test "
                f"data paths must be given together; missing {', '.join(missing)}_data_paths"
            )
        if d.data_path is not None:
            raise ConfigError(
                f"{cfg.sources.get('data.data_path')}: data_path: give either data_path or "
                "train/valid/test_data_paths, not both"
            )
    for split, paths in given.items():
        weights = getattr(d, f"{split}_data_weights")
        if paths is not None and weights is not None and len(paths) != len(weights):
            dotted = f"data.{split}_data_weights"
            raise ConfigError(
                f"{_where(cfg, keys, dotted)}: {len(weights)} weights for {len(paths)} paths"
            )
    labels = d.label_data_paths
    if labels is not None and given["train"] is not None and len(labels) != len(given["train"]):
        raise ConfigError(
            f"{_where(cfg, keys, 'data.label_data_paths')}: {len(labels)} label "
            f"paths for {len(given['train'])} train paths"
        )
    parts = [p.strip() for p in d.split.split(",")]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if not numbers or any(n < 0 for n in numbers) or sum(numbers) <= 0:
        raise ConfigError(
            f"{_where(cfg, keys, 'data.split')} = {d.split!r}: expected comma-separated "
            "non-negative proportions such as '969, 30, 1'"
        )
