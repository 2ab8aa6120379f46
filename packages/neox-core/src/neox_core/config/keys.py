"""The GPT-NeoX key table: every key neox knows and what it does with it.

A key in a YAML file is normalised (dashes -> underscores) and then looked up here:

- `DIRECT`: copied onto one dataclass field after a type check.
- `SPECIAL`: translated by code in `translate.py` (nested blocks, keys that combine).
- `IGNORED`: accepted and without effect in neox, each with the reason it is harmless. The dry
  run lists them, so nothing is dropped silently.
- `UNSUPPORTED`: a GPT-NeoX feature neox does not implement yet. Setting the key to one of its
  harmless values (GPT-NeoX's default, "off") is accepted; anything else is an error that says
  "not yet supported".

A key in none of these tables is unknown: an error naming the closest known key.
"""

from __future__ import annotations

from typing import Any

# kind names understood by translate._coerce: int, float, bool, str, switch (true/false/auto),
# and "?" for None-able, list[str], list[float], list[int].
DIRECT: dict[str, tuple[str, str]] = {
    # model
    "num_layers": ("model.num_layers", "int"),
    "hidden_size": ("model.hidden_size", "int"),
    "num_attention_heads": ("model.num_attention_heads", "int"),
    "num_kv_heads": ("model.num_kv_heads", "int?"),
    "max_position_embeddings": ("model.max_position_embeddings", "int?"),
    "make_vocab_size_divisible_by": ("model.make_vocab_size_divisible_by", "int"),
    "rotary_pct": ("model.rotary_pct", "float"),
    "rotary_emb_base": ("model.rotary_emb_base", "int"),
    "gpt_j_residual": ("model.gpt_j_residual", "bool"),
    "init_method": ("model.init_method", "str"),
    "output_layer_init_method": ("model.output_layer_init_method", "str"),
    "init_method_std": ("model.init_std", "float"),
    "hidden_dropout": ("model.hidden_dropout", "float"),
    "attention_dropout": ("model.attention_dropout", "float"),
    "checkpoint_activations": ("model.checkpoint_activations", "bool"),
    "activation_checkpoint_mode": ("model.activation_checkpointing", "str?"),  # neox extension
    "pipe_partition_method": ("parallel.pipe_partition_method", "str"),
    "pipe_schedule": ("parallel.pipe_schedule", "str"),  # neox extension
    "pipe_virtual_stages": ("parallel.pipe_virtual_stages", "int"),  # neox extension
    "zero_gather_dtype": ("parallel.zero_gather_dtype", "str"),  # neox extension
    "sliding_window_width": ("model.sliding_window_width", "int?"),
    "vocab_size": ("model.vocab_size", "int?"),  # neox extension: the tokenizer's size
    # optimizer
    "weight_decay": ("optimizer.weight_decay", "float"),
    "gradient_clipping": ("optimizer.clip_grad", "float"),
    "clip_grad": ("optimizer.clip_grad", "float"),
    # schedule
    "lr_decay_style": ("schedule.lr_decay_style", "str"),
    "lr_decay_iters": ("schedule.lr_decay_iters", "int?"),
    "warmup": ("schedule.warmup", "float"),
    "min_lr": ("schedule.min_lr", "float"),
    # training
    "train_iters": ("training.train_iters", "int"),
    "train_micro_batch_size_per_gpu": ("training.micro_batch_size", "int?"),
    "batch_size": ("training.micro_batch_size", "int?"),
    "gradient_accumulation_steps": ("training.gradient_accumulation_steps", "int?"),
    "gas": ("training.gradient_accumulation_steps", "int?"),
    "train_batch_size": ("training.train_batch_size", "int?"),
    "seed": ("training.seed", "int"),
    "eval_interval": ("training.eval_interval", "int"),
    "eval_iters": ("training.eval_iters", "int"),
    "on_nan": ("training.on_nan", "str"),  # neox extension
    "compile": ("training.compile", "switch"),  # neox extension: auto | true | false
    "attention_kernel": ("training.attention_kernel", "str"),  # neox extension: auto|sdpa|fa4
    # data
    "train_data_paths": ("data.train_data_paths", "list[str]?"),
    "valid_data_paths": ("data.valid_data_paths", "list[str]?"),
    "test_data_paths": ("data.test_data_paths", "list[str]?"),
    "train_data_weights": ("data.train_data_weights", "list[float]?"),
    "valid_data_weights": ("data.valid_data_weights", "list[float]?"),
    "test_data_weights": ("data.test_data_weights", "list[float]?"),
    "label_data_paths": ("data.label_data_paths", "list[str]?"),
    "data_path": ("data.data_path", "str?"),
    "split": ("data.split", "str"),
    "seq_length": ("data.seq_length", "int"),
    "pack_impl": ("data.pack_impl", "str"),
    "allow_chopped": ("data.allow_chopped", "bool"),
    "weight_by_num_documents": ("data.weight_by_num_documents", "bool"),
    "weighted_sampler_alpha": ("data.weighted_sampler_alpha", "float"),
    "num_workers": ("data.num_workers", "int"),
    "tokenizer_type": ("data.tokenizer_type", "str"),
    "vocab_file": ("data.vocab_file", "str?"),
    "merge_file": ("data.merge_file", "str?"),
    "allow_data_config_change": ("data.allow_data_config_change", "bool"),  # neox extension
    # checkpoint
    "save": ("checkpoint.save", "str?"),
    "load": ("checkpoint.load", "str?"),
    "checkpoint_factor": ("checkpoint.checkpoint_factor", "int?"),
    "save_interval": ("checkpoint.checkpoint_factor", "int?"),  # GPT-NeoX's older name
    "extra_save_iters": ("checkpoint.extra_save_iters", "list[int]?"),
    "keep_last_n_checkpoints": ("checkpoint.keep_last_n_checkpoints", "int?"),
    "finetune": ("checkpoint.finetune", "bool"),
    "iteration": ("checkpoint.iteration", "int?"),
    "checkpoint_verify": ("checkpoint.checkpoint_verify", "str"),  # neox extension
    # logging
    "log_interval": ("logging.log_interval", "int"),
    "tensorboard_dir": ("logging.tensorboard_dir", "str?"),
    "use_wandb": ("logging.use_wandb", "bool"),
    "wandb_project": ("logging.wandb_project", "str"),
    "wandb_group": ("logging.wandb_group", "str?"),
    "wandb_team": ("logging.wandb_team", "str?"),
    "wandb_mode": ("logging.wandb_mode", "str?"),  # neox extension
    "log_grad_norm": ("logging.log_grad_norm", "bool"),
    "log_param_norm": ("logging.log_param_norm", "bool"),
    "log_grad_pct_zeros": ("logging.log_grad_pct_zeros", "bool"),
    # kernel-fusion switches (see fusion.py)
    "scaled_upper_triang_masked_softmax_fusion": (
        "fusion.scaled_upper_triang_masked_softmax_fusion",
        "bool",
    ),
    "scaled_masked_softmax_fusion": ("fusion.scaled_masked_softmax_fusion", "bool"),
    "bias_gelu_fusion": ("fusion.bias_gelu_fusion", "bool"),
    "bias_dropout_fusion": ("fusion.bias_dropout_fusion", "bool"),
    "rope_fusion": ("fusion.rope_fusion", "bool"),
    "layernorm_fusion": ("fusion.layernorm_fusion", "bool"),
    "rmsnorm_fusion": ("fusion.rmsnorm_fusion", "bool"),
    "use_flashattn_swiglu": ("fusion.use_flashattn_swiglu", "bool"),
    "mamba_selective_scan_fusion": ("fusion.mamba_selective_scan_fusion", "bool"),
    "mamba_causal_conv_fusion": ("fusion.mamba_causal_conv_fusion", "bool"),
    "mamba_inner_func_fusion": ("fusion.mamba_inner_func_fusion", "bool"),
    # parallel
    "model_parallel_size": ("parallel.tensor_parallel_size", "int"),
    "data_parallel_size": ("parallel.data_parallel_size", "int?"),  # neox extension
    "sequence_parallel": ("parallel.sequence_parallel", "bool"),
    # launcher
    "launcher": ("launcher.launcher", "str"),
    "hostfile": ("launcher.hostfile", "str?"),
    "include": ("launcher.include", "str?"),
    "exclude": ("launcher.exclude", "str?"),
    "num_gpus": ("launcher.num_gpus", "int?"),
    "num_nodes": ("launcher.num_nodes", "int"),
    "master_port": ("launcher.master_port", "int"),
    "master_addr": ("launcher.master_addr", "str?"),
    "deepspeed_slurm": ("launcher.deepspeed_slurm", "bool"),
    "deepspeed_mpi": ("launcher.deepspeed_mpi", "bool"),
    # loss scaling, also settable inside the `fp16` block
    "loss_scale": ("precision.loss_scale", "float?"),
    "loss_scale_window": ("precision.loss_scale_window", "int"),
    "hysteresis": ("precision.hysteresis", "int"),
    "min_scale": ("precision.min_loss_scale", "float"),
    "fp32_allreduce": ("precision.fp32_allreduce", "bool"),
    "fused_kernels": ("model.fused_kernels", "bool"),  # neox extension: neox-kernels' ops
    # post-training (GPT-NeoX's train_impl; the objectives live in neox-posttrain)
    "train_label_data_paths": ("data.label_data_paths", "list[str]?"),
    "valid_label_data_paths": ("data.valid_label_data_paths", "list[str]?"),
    "test_label_data_paths": ("data.test_label_data_paths", "list[str]?"),
    "train_impl": ("posttrain.train_impl", "str"),
    "dataset_impl": ("posttrain.dataset_impl", "str"),
    "dpo_beta": ("posttrain.dpo_beta", "float"),
    "dpo_reference_free": ("posttrain.dpo_reference_free", "bool"),
    "dpo_fp32": ("posttrain.dpo_fp32", "bool"),
    "kto_beta": ("posttrain.kto_beta", "float"),
    "kto_desirable_weight": ("posttrain.kto_desirable_weight", "float"),
    "kto_undesirable_weight": ("posttrain.kto_undesirable_weight", "float"),
    "kto_fp32": ("posttrain.kto_fp32", "bool"),
    "z_loss": ("posttrain.z_loss", "float"),
    "precompute_model_name": ("posttrain.precompute_model_name", "str?"),
    "rm_pad_token_id": ("posttrain.rm_pad_token_id", "int?"),  # neox extension
    **{
        f"{side}_{split}{kind}_data_paths": (
            f"posttrain.{side}_{split}{kind}_data_paths",
            "list[str]?",
        )
        for side in ("pos", "neg")
        for split in ("train", "valid", "test")
        for kind in ("", "_label")
    },
    **{
        f"{split}_reward_data_paths": (f"posttrain.{split}_reward_data_paths", "list[str]?")
        for split in ("train", "valid", "test")
    },
    # generation (neox-generate) and evaluation (neox-eval, eval_tasks during training)
    "text_gen_type": ("generation.text_gen_type", "str"),
    "sample_input_file": ("generation.sample_input_file", "str?"),
    "sample_output_file": ("generation.sample_output_file", "str"),
    "num_samples": ("generation.num_samples", "int"),
    "maximum_tokens": ("generation.maximum_tokens", "int"),
    "prompt_end": ("generation.prompt_end", "str"),
    "temperature": ("generation.temperature", "float"),
    "top_k": ("generation.top_k", "int"),
    "top_p": ("generation.top_p", "float"),
    "recompute": ("generation.recompute", "bool"),
    "stop_strings": ("generation.stop_strings", "list[str]?"),  # neox extension
    "eval_tasks": ("evaluation.eval_tasks", "list[str]?"),
    "eval_results_prefix": ("evaluation.eval_results_prefix", "str"),
    "eval_include_path": ("evaluation.eval_include_path", "str?"),  # neox extension
    "eval_batch_size": ("evaluation.eval_batch_size", "int?"),  # neox extension
}

# Keys whose translation needs code (see translate.py).
SPECIAL: frozenset[str] = frozenset(
    {
        "precision",
        "fp16",
        "bf16",
        "amp",
        "data_types",
        "deepspeed_extra_args",
        "attention_type",
        "optimizer",
        "lr",
        "zero_optimization",
        "attention_config",
        "norm",
        "layernorm_epsilon",
        "rms_norm_epsilon",
        "activation",
        "mlp_type",
        "intermediate_size",
        "expansion_factor",
        "mlp_multiple_of",
        "llama_mlp_multiple_of",
        "pos_emb",
        "no_weight_tying",
        "use_bias_in_norms",
        "use_bias_in_attn_linear",
        "use_bias_in_mlp",
        "pipe_parallel_size",
        "padded_vocab_size",
        "dynamic_loss_scale",
        "data_impl",
        "checkpoint_num_layers",
    }
)

_LAUNCH = "set by GPT-NeoX's launcher at run time, not by users; neox derives its own"
_DS_LOG = "DeepSpeed console output; neox prints its own log line every log_interval"
_GEN = "read by GPT-NeoX's generate.py/eval.py, not by training"

IGNORED: dict[str, str] = {
    "attention_softmax_in_fp32": "scaled_dot_product_attention accumulates the softmax in fp32",
    "apply_query_key_layer_scaling": (
        "a no-op mathematically (scores divided and re-multiplied by the layer number)"
    ),
    "use_cpu_initialization": "where weights are initialised, not their values",
    "partition_activations": "splits checkpointed activations across tensor-parallel ranks",
    "synchronize_each_layer": "a CUDA synchronise per checkpointed layer (debugging aid)",
    "contiguous_checkpointing": "a DeepSpeed memory-layout option for checkpointed activations",
    "deepspeed_activation_checkpointing": "deprecated in GPT-NeoX itself",
    "profile_backward": "a profiling aid",
    "mmap_warmup": "a page-cache warm-up; datasets are read through mmap either way",
    "distributed_backend": "neox picks nccl on GPUs and gloo on CPU",
    "steps_per_print": _DS_LOG,
    "wall_clock_breakdown": _DS_LOG,
    "log_dir": "neox logs to stdout/stderr; the launcher (neox-slurm) chooses the log files",
    "rotary_save_freqs_buffer": "rotary frequencies are recomputed, never stored",
    "zero_allow_untested_optimizer": "a DeepSpeed safety switch for ZeRO with custom optimizers",
    "no_ssh_check": _LAUNCH,
    "force_multi": _LAUNCH,
    "detect_nvlink_pairs": _LAUNCH,
    "comment": "a DeepSpeed SLURM launcher comment; neox-slurm writes the sbatch options",
    "account": "a DeepSpeed SLURM launcher account; neox-slurm writes the sbatch options",
    "git_hash": _LAUNCH,
    "config_files": _LAUNCH,
    "user_script": _LAUNCH,
    "global_num_gpus": _LAUNCH,
    "world_size": _LAUNCH,
    "local_rank": _LAUNCH,
    "rank": _LAUNCH,
    "is_pipe_parallel": _LAUNCH,
    "deepspeed": _LAUNCH,
    "deepspeed_config": _LAUNCH,
    "megatron_config": _LAUNCH,
    "do_train": _LAUNCH,
    "do_valid": _LAUNCH,
    "do_test": _LAUNCH,
    "save_iters": _LAUNCH,
    "deepscale": "deprecated in GPT-NeoX itself",
    "deepscale_config": "deprecated in GPT-NeoX itself",
    "short_seq_prob": "used only by BERT-style data, not by GPT training",
    "onnx_safe": "an ONNX-export workaround",
    "param_sharing_style": "only meaningful with num_unique_layers, which must be unset",
    "gmlp_attn_dim": "only meaningful for gmlp attention, which is not supported",
    "rpe_num_buckets": "only meaningful with pos_emb rpe, which is not supported",
    "rpe_max_distance": "only meaningful with pos_emb rpe, which is not supported",
    "memory_profiling_path": "only meaningful with memory_profiling, which must be off",
    "profile_step_start": "only meaningful with profile, which must be off",
    "profile_step_stop": "only meaningful with profile, which must be off",
}

_NYS = "not yet supported by neox"

# key -> (values that are harmless and accepted, what the feature is)
UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "output_layer_parallelism": (("column",), "a row-parallel output layer"),
    "num_unique_layers": ((None,), "parameter sharing across layers"),
    "sparsity_config": ((None, {}), "DeepSpeed sparse attention"),
    "gpt_j_tied": ((False,), "tied layer norms in the parallel residual"),
    "use_qk_layernorm": ((False,), "query/key layer norm"),
    "soft_prompt_tuning": ((None,), "soft prompt tuning"),
    "opt_pos_emb_offset": ((0,), "OPT's learned position offset"),
    "extra_sentinel_tokens": ((0,), "T5 sentinel tokens"),
    "scalenorm_epsilon": ((1e-8,), "ScaleNorm"),
    "fp16_lm_cross_entropy": ((False,), "the fp16 cross entropy"),
    "use_mup": ((False,), "muP"),
    "coord_check": ((False,), "muP coordinate checks"),
    "save_base_shapes": ((False,), "muP base shapes"),
    "base_shapes_file": ((None,), "muP base shapes"),
    "mup_init_scale": ((1.0,), "muP"),
    "mup_attn_temp": ((1.0,), "muP"),
    "mup_output_temp": ((1.0,), "muP"),
    "mup_embedding_mult": ((1.0,), "muP"),
    "mup_rp_embedding_mult": ((1.0,), "muP"),
    "mup_width_scale": ((2,), "muP"),
    "moe_num_experts": ((1,), "mixture of experts"),
    "use_bnb_optimizer": ((False,), "bitsandbytes optimizers"),
    "optimizer_type": (("adam", "Adam", "adamw", "AdamW"), "optimizers other than Adam/AdamW"),
    "scheduler": ((None,), "DeepSpeed LR schedulers (neox schedules the LR itself)"),
    "prescale_gradients": ((False,), "gradient prescaling"),
    "gradient_predivide_factor": ((1.0,), "gradient predivision"),
    "sparse_gradients": ((False,), "sparse gradients"),
    "curriculum_learning": ((None,), "curriculum learning"),
    "curriculum_seqlen": ((0,), "curriculum learning"),
    "dump_state": ((False,), "DeepSpeed state dumps"),
    "flops_profiler": ((None,), "the DeepSpeed FLOPs profiler"),
    "communication_data_type": ((None,), "a separate communication dtype"),
    "autotuning": ((None,), "DeepSpeed autotuning"),
    "autotuning_run": ((None,), "DeepSpeed autotuning"),
    "activation_checkpointing": ((None,), "DeepSpeed's activation_checkpointing block"),
    "sparse_attention": ((None,), "DeepSpeed sparse attention"),
    "data_efficiency": ((None,), "DeepSpeed data efficiency"),
    "elasticity": ((None,), "DeepSpeed elasticity"),
    "comms_logger": ((None,), "DeepSpeed communication logging"),
    "compression_training": ((None,), "DeepSpeed compression training"),
    "checkpoint": ((None,), "DeepSpeed's checkpoint block"),
    "tensorboard": ((None,), "DeepSpeed's tensorboard monitor (use tensorboard_dir)"),
    "wandb": ((None,), "DeepSpeed's wandb monitor (use use_wandb)"),
    "csv_monitor": ((None,), "DeepSpeed's CSV monitor"),
    "wandb_host": (("https://api.wandb.ai",), "a custom wandb host"),
    "wandb_init_all_ranks": ((False,), "wandb on every rank"),
    "log_optimizer_states": ((False,), "optimizer-state logging"),
    "log_gradient_noise_scale": ((False,), "gradient noise scale logging"),
    "gradient_noise_scale_n_batches": ((5,), "gradient noise scale logging"),
    "gradient_noise_scale_cpu_offload": ((False,), "gradient noise scale logging"),
    "checkpoint_scale": (("linear",), "log-spaced checkpoint steps"),
    "checkpoint_validation_with_forward_pass": ((False,), "checkpoint forward validation"),
    "checkpoint_in_cpu": ((False,), "CPU activation checkpoints"),
    "no_save_optim": ((False,), "checkpoints without optimizer state"),
    "no_save_rng": ((False,), "checkpoints without RNG state"),
    "no_load_optim": ((False,), "loading without optimizer state (use finetune)"),
    "no_load_rng": ((False,), "loading without RNG state (use finetune)"),
    "exit_interval": ((None,), "exiting every N iterations"),
    "eod_mask_loss": ((False,), "masking the loss on end-of-document tokens"),
    "char_level_ppl": ((False,), "character-level perplexity"),
    "adlr_autoresume": ((False,), "ADLR auto-resume"),
    "adlr_autoresume_interval": ((1000,), "ADLR auto-resume"),
    "lazy_mpu_init": ((False,), "lazy model-parallel initialisation"),
    "override_lr_scheduler": (
        (False,),
        "GPT-NeoX's resume switches; neox always resumes with the config's LR schedule and logs what differs from the checkpoint",
    ),
    "use_checkpoint_lr_scheduler": (
        (False,),
        "GPT-NeoX's resume switches; neox always resumes with the config's LR schedule and logs what differs from the checkpoint",
    ),
    "use_shared_fs": ((True,), "index building on nodes without a shared filesystem"),
    "fp32_reinforce": ((True,), "REINFORCE (online RL)"),
    "reinforce_leave_one_out": ((False,), "REINFORCE (online RL)"),
    "kl_impl": (("mse",), "REINFORCE (online RL)"),
    "kl_div_beta": ((0.1,), "REINFORCE (online RL)"),
    "packing": ((False,), "T5-style packing"),
    "loss_on_targets_only": ((False,), "prefix-LM loss masking"),
    "s3_path": ((None,), "uploading checkpoints to S3"),
    "s3_chunk_size": ((104_857_600,), "uploading checkpoints to S3"),
    "memory_profiling": ((False,), "memory profiling"),
    "profile": ((False,), "the built-in profiler"),
    "te_columnparallel": ((False,), "Transformer Engine layers"),
    "te_rowparallel": ((False,), "Transformer Engine layers"),
    "te_layernorm_mlp": ((False,), "Transformer Engine layers"),
    "te_mha": ((False,), "Transformer Engine layers"),
    "te_fp8_mha": ((False,), "Transformer Engine FP8 attention"),
    "return_logits": ((False,), "generated logits in neox-generate's output"),
}

# Keys found in GPT-NeoX's own config suite that GPT-NeoX does not define (it stops on them
# too): the error says what to write instead.
NOT_GPT_NEOX_KEYS: dict[str, str] = {
    "decay_lr_to": (
        "not a GPT-NeoX key (GPT-NeoX stops on it too; its configs/llemma/7B.yml carries it); "
        "set min_lr to the learning rate the schedule should decay to"
    ),
}

# Keys neox adds on top of GPT-NeoX's set.
NEOX_EXTENSIONS: frozenset[str] = frozenset(
    {
        "vocab_size",
        "on_nan",
        "compile",
        "attention_kernel",
        "activation_checkpoint_mode",
        "wandb_mode",
        "data_parallel_size",
        "rm_pad_token_id",
        "fused_kernels",
        "stop_strings",
        "eval_include_path",
        "eval_batch_size",
        "checkpoint_verify",
        "pipe_schedule",
        "pipe_virtual_stages",
        "zero_gather_dtype",
    }
)


def normalise_key(key: str) -> str:
    """GPT-NeoX treats `num-layers` and `num_layers` as the same key."""
    return key.strip().replace("-", "_")


def all_known_keys() -> list[str]:
    """Every key a config file may hold, for "did you mean" suggestions."""
    return sorted(set(DIRECT) | SPECIAL | set(IGNORED) | set(UNSUPPORTED))
