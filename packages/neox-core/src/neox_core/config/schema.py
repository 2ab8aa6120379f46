"""The typed neox configuration: one dataclass per topic, filled by `load_config`.

Defaults are GPT-NeoX's (configs/neox_arguments.md of its current version) so that a GPT-NeoX
file means the same thing here.

Field names are neox's own; `translate.py` maps GPT-NeoX YAML keys onto them. Every field has
a default so a config can be built from a partial mapping; derived fields (marked below) are
filled by `derive.py` after the YAML files are merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    architecture: str = "gpt_neox"  # "gpt_neox" | "llama"
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_kv_heads: int | None = None  # None -> num_attention_heads (filled by derive)
    intermediate_size: int | None = None  # None -> GPT-NeoX convention (filled by derive)
    max_position_embeddings: int | None = None  # None -> seq_length (filled by derive)
    vocab_size: int | None = None  # the tokenizer's vocabulary size, before padding
    padded_vocab_size: int | None = None  # derived: multiple of divisible_by x TP
    make_vocab_size_divisible_by: int = 128
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    norm_bias: bool = True  # GPT-NeoX `use_bias_in_norms` (LayerNorm/RMSNorm bias)
    activation: str = "gelu"  # "gelu" | "swiglu"
    rotary_pct: float = 1.0
    rotary_emb_base: int = 10000
    gpt_j_residual: bool = False  # parallel residual (attention and MLP read the same input)
    attention_bias: bool = True  # GPT-NeoX `use_bias_in_attn_linear` (QKV and output)
    mlp_bias: bool = True  # GPT-NeoX `use_bias_in_mlp` (both MLP projections)
    tie_embeddings: bool = True  # GPT-NeoX's `no_weight_tying: false` (its default)
    init_method: str = "normal"
    output_layer_init_method: str = "scaled_normal"
    init_std: float = 0.02  # GPT-NeoX `init_method_std`
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    # GPT-NeoX `sliding_window_width`: a query sees itself and the w positions before it
    # (flash-attn window (w, 0)); None = full causal attention
    sliding_window_width: int | None = None
    checkpoint_activations: bool = False  # GPT-NeoX's switch: true = full recomputation
    # neox key activation_checkpoint_mode: "none" | "full" (recompute each layer, GPT-NeoX's checkpoint_activations)
    # | "selective" (recompute the cheap ops, keep the matmul outputs); None -> derived from
    # checkpoint_activations. Applied from outside the model by distributed/activation_checkpoint.
    activation_checkpointing: str | None = None
    # neox-kernels' fused CUDA ops where they run (norms, rotary, activations, linear+CE);
    # false runs the plain PyTorch code everywhere (debugging). GPT-NeoX's *_fusion keys map here.
    fused_kernels: bool = True


@dataclass
class PrecisionConfig:
    dtype: str = "fp32"  # "fp32" | "bf16" | "fp16"
    fp32_master_weights: bool = False  # derived: true for bf16/fp16
    loss_scale: float | None = None  # None = dynamic loss scaling (fp16 only)
    initial_scale_power: int = 16
    loss_scale_window: int = 1000
    hysteresis: int = 2
    min_loss_scale: float = 1.0
    # GPT-NeoX `fp32_allreduce`: reduce gradients in fp32. neox's gradients are those of the
    # fp32 master weights, so data-parallel reduction is fp32 either way; tensor-parallel
    # reductions of bf16/fp16 activations read this switch.
    fp32_allreduce: bool = False
    # neox `precision: fp8` (dtype stays "bf16"): the decoder layers' linears train in float8
    # through torchao (distributed/float8.py); everything else is exactly the bf16 path.
    fp8_linear: bool = False


@dataclass
class OptimizerConfig:
    type: str = "adam"  # "adam" | "adamw" (GPT-NeoX's Adam is decoupled-weight-decay AdamW)
    lr: float = 1e-3  # GPT-NeoX's default
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_grad: float = 1.0  # GPT-NeoX `gradient_clipping`; 0 disables


@dataclass
class ScheduleConfig:
    lr_decay_style: str = "linear"  # "linear" | "cosine" | "constant" | "inverse_sqrt"
    lr_decay_iters: int | None = None  # None -> train_iters (filled by derive)
    warmup: float = 0.01  # fraction of lr_decay_iters, as GPT-NeoX
    min_lr: float = 0.0


@dataclass
class TrainingConfig:
    train_iters: int = 0
    micro_batch_size: int = 1  # GPT-NeoX `train_micro_batch_size_per_gpu`
    gradient_accumulation_steps: int = 1
    train_batch_size: int | None = None  # derived/checked: micro x accum x data-parallel size
    seed: int = 1234
    eval_interval: int = 1000
    eval_iters: int = 100
    on_nan: str = "skip"  # neox extension: "skip" | "stop"
    # neox extension: torch.compile each decoder layer; "auto" = on for CUDA, off for CPU
    compile: str = "auto"  # "auto" | "true" | "false"
    # neox extension: "sdpa" (scaled_dot_product_attention), "fa4" (FlashAttention-4, needs
    # flash-attn-4 and a Hopper-class GPU) or "auto": FA4 where installed and timed faster
    attention_kernel: str = "auto"


@dataclass
class DataConfig:
    train_data_paths: list[str] | None = None
    valid_data_paths: list[str] | None = None
    test_data_paths: list[str] | None = None
    train_data_weights: list[float] | None = None
    valid_data_weights: list[float] | None = None
    test_data_weights: list[float] | None = None
    label_data_paths: list[str] | None = None  # train split (GPT-NeoX: train_label_data_paths)
    valid_label_data_paths: list[str] | None = None
    test_label_data_paths: list[str] | None = None
    data_path: str | None = None
    split: str = "969, 30, 1"
    seq_length: int = 2048
    pack_impl: str = "packed"  # "packed" | "pack_until_overflow" | "unpacked"
    allow_chopped: bool = True
    weight_by_num_documents: bool = False
    weighted_sampler_alpha: float = 1.0
    num_workers: int = 2
    tokenizer_type: str = "GPT2BPETokenizer"
    vocab_file: str | None = None
    merge_file: str | None = None
    # neox extension: resume although the data config differs from the checkpoint's
    allow_data_config_change: bool = False


@dataclass
class CheckpointConfig:
    save: str | None = None
    load: str | None = None
    checkpoint_factor: int | None = None  # save every N iterations
    extra_save_iters: list[int] | None = None
    keep_last_n_checkpoints: int | None = None
    finetune: bool = False
    iteration: int | None = None  # the step to load; None = the one named in `latest`
    checkpoint_verify: str = "hash"  # neox extension: "hash" | "size" (checks at load)


@dataclass
class LoggingConfig:
    log_interval: int = 100
    tensorboard_dir: str | None = None
    use_wandb: bool = False
    wandb_project: str = "neox"
    wandb_group: str | None = None
    wandb_team: str | None = None
    # neox: "online" | "offline" | "disabled"; None = W&B's environment decides (WANDB_MODE)
    wandb_mode: str | None = None
    log_grad_norm: bool = False  # per-parameter gradient norms, every step (GPT-NeoX's names)
    log_param_norm: bool = False  # per-parameter weight norms, every step
    log_grad_pct_zeros: bool = False  # per-parameter percentage of zero gradients, every step


@dataclass
class FusionConfig:
    """GPT-NeoX's kernel-fusion switches, as given. They never change what is computed, only
    how; `neox_core.config.fusion.FUSION_STATUS` says which are wired to a fused kernel."""

    scaled_upper_triang_masked_softmax_fusion: bool = False
    scaled_masked_softmax_fusion: bool = False
    bias_gelu_fusion: bool = False
    bias_dropout_fusion: bool = False
    rope_fusion: bool = False
    layernorm_fusion: bool = False
    rmsnorm_fusion: bool = False
    use_flashattn_swiglu: bool = False
    mamba_selective_scan_fusion: bool = False
    mamba_causal_conv_fusion: bool = False
    mamba_inner_func_fusion: bool = False


@dataclass
class ParallelConfig:
    tensor_parallel_size: int = 1  # GPT-NeoX `model_parallel_size`
    pipe_parallel_size: int = 1
    pipe_partition_method: str = "type:transformer"  # how layers split over pipeline stages
    pipe_schedule: str = "1f1b"  # neox: gpipe | 1f1b | interleaved_1f1b | zero_bubble
    pipe_virtual_stages: int = 1  # neox: stages per pipeline rank (interleaved schedules)
    data_parallel_size: int = 1  # set from WORLD_SIZE at launch; 1 in a dry run unless given
    sequence_parallel: bool = False  # Megatron sequence parallelism inside the TP group
    zero_stage: int = 0  # GPT-NeoX `zero_optimization.stage`: 0 DDP .. 3 FSDP2 (params sharded)
    offload_optimizer: bool = False  # zero_optimization `cpu_offload` / `offload_optimizer`
    offload_param: bool = False  # zero_optimization `offload_param` (stage 3)
    # neox: the dtype FSDP (ZeRO 1-3) all-gathers the decoder layers' parameters in, "fp32" or
    # "bf16" (bf16 precision only: what autocast would cast them to anyway; gradients are still
    # reduce-scattered in fp32 and the sharded master weights stay fp32); "auto" (derived):
    # bf16 where it applies (ZeRO 1-3 and bf16 precision without fp8), else fp32
    zero_gather_dtype: str = "auto"


@dataclass
class LauncherConfig:
    """What a GPT-NeoX setup file holds about the launch; kept for the record and neox-slurm."""

    launcher: str = "pdsh"  # "pdsh" | "openmpi" | "mvapich" | "slurm"
    hostfile: str | None = None
    include: str | None = None
    exclude: str | None = None
    num_gpus: int | None = None
    num_nodes: int = -1
    master_port: int = 29500
    master_addr: str | None = None
    deepspeed_slurm: bool = False
    deepspeed_mpi: bool = False


@dataclass
class PostTrainConfig:
    """GPT-NeoX's post-training keys (`train_impl` and its data); run by neox-posttrain."""

    train_impl: str = "normal"  # "normal" | "dpo" | "kto" | "rm" (a neox.train_impl plug-in)
    dataset_impl: str = "gpt2"  # "gpt2" | "pairwise" (chosen/rejected pairs)
    dpo_beta: float = 0.1
    dpo_reference_free: bool = False
    dpo_fp32: bool = True
    kto_beta: float = 0.1
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    kto_fp32: bool = True
    z_loss: float = 0.0  # rm: z_loss·(r_c² + r_r²); normal (neox): PaLM z-loss on the logits
    precompute_model_name: str | None = None  # reference log-probs at <data prefix>_<name>
    pos_train_data_paths: list[str] | None = None
    neg_train_data_paths: list[str] | None = None
    pos_valid_data_paths: list[str] | None = None
    neg_valid_data_paths: list[str] | None = None
    pos_test_data_paths: list[str] | None = None
    neg_test_data_paths: list[str] | None = None
    pos_train_label_data_paths: list[str] | None = None
    neg_train_label_data_paths: list[str] | None = None
    pos_valid_label_data_paths: list[str] | None = None
    neg_valid_label_data_paths: list[str] | None = None
    pos_test_label_data_paths: list[str] | None = None
    neg_test_label_data_paths: list[str] | None = None
    train_reward_data_paths: list[str] | None = None  # KTO: +1 desirable / -1 per token
    valid_reward_data_paths: list[str] | None = None
    test_reward_data_paths: list[str] | None = None
    rm_pad_token_id: int | None = None  # neox: pad id written into an exported reward model


@dataclass
class GenerationConfig:
    """What `neox-generate` (GPT-NeoX's generate.py) reads; training ignores it."""

    text_gen_type: str = "unconditional"  # "unconditional" | "input-file" | "interactive"
    sample_input_file: str | None = None
    sample_output_file: str = "samples.txt"
    num_samples: int = 1  # unconditional samples to draw
    maximum_tokens: int = 64  # new tokens per sample
    prompt_end: str = "\n"  # separates prompts in sample_input_file
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 0.0  # 0 = off
    recompute: bool = False  # True: no KV cache, the whole sequence runs every step
    stop_strings: list[str] | None = None  # neox extension: end a sample at any of these


@dataclass
class EvalConfig:
    """lm-evaluation-harness runs: `neox-eval` and `eval_tasks` at training's eval steps."""

    eval_tasks: list[str] | None = None
    eval_results_prefix: str = ""
    eval_include_path: str | None = None  # neox extension: a folder of local task YAMLs
    eval_batch_size: int | None = None  # neox extension: None -> micro_batch_size


@dataclass
class NeoxConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    posttrain: PostTrainConfig = field(default_factory=PostTrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    # dotted field ("model.hidden_size") -> "file.yml:LINE" | "default" | "derived" | "override"
    sources: dict[str, str] = field(default_factory=dict)
    # the merged YAML as given (after merge, before translation), for copying into checkpoints
    raw: dict[str, Any] = field(default_factory=dict)
    # GPT-NeoX keys accepted without effect: key -> "file:line: why it is harmless"
    ignored: dict[str, str] = field(default_factory=dict)


GROUPS: tuple[str, ...] = (
    "model",
    "precision",
    "optimizer",
    "schedule",
    "training",
    "data",
    "checkpoint",
    "logging",
    "fusion",
    "parallel",
    "launcher",
    "posttrain",
    "generation",
    "evaluation",
)
