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
    "checkpoint.checkpoint_verify": ("hash", "size"),
    "training.compile": ("auto", "true", "false"),
    "training.attention_kernel": ("auto", "sdpa", "fa4"),
    "model.activation_checkpointing": ("none", "full", "selective"),
    "data.pack_impl": ("packed", "pack_until_overflow", "unpacked"),
    "data.tokenizer_type": TOKENIZER_TYPES,
    "logging.wandb_mode": ("online", "offline", "disabled"),
    "precision.dtype": ("fp32", "bf16", "fp16"),
    "launcher.launcher": ("pdsh", "openmpi", "mvapich", "slurm"),
    "posttrain.train_impl": ("normal", "dpo", "kto", "rm"),
    "posttrain.dataset_impl": ("gpt2", "pairwise"),
    "generation.text_gen_type": ("unconditional", "input-file", "interactive"),
}

# GPT-NeoX choices that neox does not implement yet
_NOT_YET: dict[str, tuple[str, ...]] = {
    "schedule.lr_decay_style": ("exponential", "infinite_cosine", "infinite_inv_sqrt"),
    "posttrain.train_impl": ("reinforce",),  # online RL
    "posttrain.dataset_impl": ("online",),
    "generation.text_gen_type": ("precompute",),
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
    "parallel.pipe_virtual_stages",
    "parallel.data_parallel_size",
    "precision.loss_scale_window",
    "generation.num_samples",
    "generation.maximum_tokens",
    "evaluation.eval_batch_size",
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
    "model.sliding_window_width",
    "generation.temperature",
    "generation.top_k",
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
    check("generation.top_p", lambda v: 0 <= v <= 1, "must be in [0, 1] (0 turns it off)")
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

    check(
        "parallel.pipe_schedule",
        lambda v: v in ("gpipe", "1f1b", "interleaved_1f1b", "zero_bubble"),
        "expected gpipe, 1f1b, interleaved_1f1b or zero_bubble",
    )
    check(
        "parallel.pipe_partition_method",
        lambda v: v in ("type:transformer", "uniform", "parameters"),
        "expected type:transformer, uniform or parameters",
    )
    check("parallel.zero_stage", lambda v: v in (0, 1, 2, 3), "expected a ZeRO stage 0, 1, 2 or 3")
    if cfg.parallel.offload_param and cfg.parallel.zero_stage != 3:
        fail("parallel.offload_param", "parameter offload needs ZeRO stage 3")
    if cfg.parallel.offload_optimizer and cfg.parallel.zero_stage == 0:
        fail("parallel.offload_optimizer", "optimizer offload needs ZeRO stage 1, 2 or 3")
    check("parallel.zero_gather_dtype", lambda v: v in ("fp32", "bf16"),
          "expected auto, fp32 or bf16")  # fmt: skip
    if cfg.parallel.zero_gather_dtype == "bf16":
        if cfg.parallel.zero_stage == 0:
            fail("parallel.zero_gather_dtype", "bf16 gathers need ZeRO stage 1, 2 or 3 (FSDP)")
        elif cfg.precision.dtype != "bf16" or cfg.precision.fp8_linear:
            fail("parallel.zero_gather_dtype", "bf16 gathers need precision bf16 (not fp8)")
    if cfg.parallel.sequence_parallel and cfg.parallel.tensor_parallel_size == 1:
        fail("parallel.sequence_parallel", "sequence parallelism needs model_parallel_size > 1")
    _validate_fp8(cfg, keys)
    from neox_core.distributed.parallel_dims import check_model_split

    check_model_split(cfg, keys)
    from neox_core.distributed.pipeline_partition import check_pipeline

    check_pipeline(cfg, keys)

    _validate_data(cfg, keys)
    _validate_posttrain(cfg, keys)


def _validate_fp8(cfg: NeoxConfig, keys: dict[str, str]) -> None:
    """`precision: fp8` is bf16 plus float8 linears, tested without TP and pipelines only."""
    if not cfg.precision.fp8_linear:
        return
    where = f"{_where(cfg, keys, 'precision.fp8_linear')} = fp8"
    if cfg.precision.dtype != "bf16":
        raise ConfigError(f"{where}: fp8 runs on bf16 autocast, not {cfg.precision.dtype}")
    for dotted, what in (
        ("parallel.tensor_parallel_size", "float8 linears are not wired into neox's TP layout"),
        ("parallel.pipe_parallel_size", "not verified with pipeline parallelism"),
    ):
        if _value(cfg, dotted) > 1:
            raise ConfigError(
                f"{where}: not yet supported with {_where(cfg, keys, dotted)} = "
                f"{_value(cfg, dotted)} ({what}); use precision: bf16 or a size of 1"
            )


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
                f" (train_data_paths: {cfg.sources.get('data.train_data_paths')})"
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


def _validate_posttrain(cfg: NeoxConfig, keys: dict[str, str]) -> None:
    """train_impl needs its data: DPO/RM pairs (dataset_impl pairwise), KTO reward datasets."""
    pt = cfg.posttrain
    for dotted in ("posttrain.dpo_beta", "posttrain.kto_beta"):
        if _value(cfg, dotted) <= 0:
            raise ConfigError(
                f"{_where(cfg, keys, dotted)} = {_value(cfg, dotted)}: must be positive"
            )
    for dotted in (
        "posttrain.kto_desirable_weight",
        "posttrain.kto_undesirable_weight",
        "posttrain.z_loss",
    ):
        if _value(cfg, dotted) < 0:
            raise ConfigError(
                f"{_where(cfg, keys, dotted)} = {_value(cfg, dotted)}: must not be negative"
            )
    impl = pt.train_impl
    pairwise = pt.dataset_impl == "pairwise"
    if impl in ("dpo", "rm") and not pairwise:
        raise ConfigError(
            f"{_where(cfg, keys, 'posttrain.train_impl')} = {impl!r}: needs dataset_impl: "
            "pairwise (chosen/rejected pairs in pos_/neg_*_data_paths)"
        )
    if pairwise and impl not in ("dpo", "rm"):
        raise ConfigError(
            f"{_where(cfg, keys, 'posttrain.dataset_impl')} = 'pairwise': only train_impl "
            f"dpo or rm reads pairs (train_impl is {impl!r})"
        )
    if pairwise:
        for split in ("train", "valid", "test"):
            pos = getattr(pt, f"pos_{split}_data_paths")
            neg = getattr(pt, f"neg_{split}_data_paths")
            where = _where(cfg, keys, f"posttrain.pos_{split}_data_paths")
            if split == "train" and not pos:
                raise ConfigError(f"{where}: dataset_impl pairwise needs pos_train_data_paths")
            if (pos is None) != (neg is None) or (pos and len(pos) != len(neg or [])):
                raise ConfigError(
                    f"{where}: pos_{split}_data_paths and neg_{split}_data_paths must list "
                    "the same number of datasets"
                )
            for side in ("pos", "neg"):
                labels = getattr(pt, f"{side}_{split}_label_data_paths")
                if labels is not None and len(labels) != len(pos or []):
                    raise ConfigError(
                        f"{_where(cfg, keys, f'posttrain.{side}_{split}_label_data_paths')}: "
                        f"{len(labels)} label paths for {len(pos or [])} data paths"
                    )
        if cfg.data.train_data_paths or cfg.data.data_path:
            raise ConfigError(
                f"{_where(cfg, keys, 'posttrain.dataset_impl')}: dataset_impl pairwise reads "
                "pos_/neg_*_data_paths; remove train_data_paths/data_path"
            )
    if impl == "kto":
        if not pt.train_reward_data_paths:
            raise ConfigError(
                f"{_where(cfg, keys, 'posttrain.train_impl')} = 'kto': needs "
                "train_reward_data_paths (neox-data tokenize --mode kto writes them)"
            )
        if cfg.training.micro_batch_size < 2:
            raise ConfigError(
                f"{_where(cfg, keys, 'training.micro_batch_size')} = "
                f"{cfg.training.micro_batch_size}: KTO estimates its KL reference point from "
                "the other half of each micro-batch; use at least 2"
            )
    for split in ("train", "valid", "test"):
        rewards = getattr(pt, f"{split}_reward_data_paths")
        paths = getattr(cfg.data, f"{split}_data_paths")
        if rewards is not None and len(rewards) != len(paths or []):
            raise ConfigError(
                f"{_where(cfg, keys, f'posttrain.{split}_reward_data_paths')}: {len(rewards)} "
                f"reward paths for {len(paths or [])} {split}_data_paths"
            )
        labels = getattr(cfg.data, f"{split}_label_data_paths", None) if split != "train" else None
        if labels is not None and len(labels) != len(paths or []):
            raise ConfigError(
                f"{_where(cfg, keys, f'data.{split}_label_data_paths')}: {len(labels)} label "
                f"paths for {len(paths or [])} {split}_data_paths"
            )
