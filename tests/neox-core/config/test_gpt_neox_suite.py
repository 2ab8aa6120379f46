"""A representative sample of GPT-NeoX's shipped configs (`configs/`, `post-training/configs/`),
written here in their style with the keys that decide their fate, merged with neox's
`examples/configs/local_setup.yml` and dry-run as a new user would. Each has its expected
status: dry-runs (with the parameter count) or refused (with the key named).

Keys owned by other work in progress (tensor/pipeline parallelism, post-training, generation)
are left out of the sample; `tools/config_coverage.py` reports those configs as pending.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neox_core.cli import main
from neox_core.config import ConfigError, load_config
from neox_core.flops import parameter_count

ROOT = Path(__file__).resolve().parents[3]
SETUP = ROOT / "examples" / "configs" / "local_setup.yml"

_PYTHIA_TRAINING = """
  "init_method": "small_init", "output_layer_init_method": "wang_init",
  "optimizer": {"type": "Adam", "params": {"lr": 0.00025, "betas": [0.9, 0.95], "eps": 1.0e-8}},
  "min_lr": 0.000025,
  "zero_optimization": {"stage": 0, "allgather_partitions": true, "overlap_comm": true,
                        "reduce_scatter": true, "contiguous_gradients": true, "cpu_offload": false},
  "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4,
  "data_impl": "mmap", "num_workers": 1,
  "checkpoint_activations": true, "checkpoint_num_layers": 1,
  "partition_activations": true, "synchronize_each_layer": true,
  "gradient_clipping": 1.0, "weight_decay": 0.1, "hidden_dropout": 0, "attention_dropout": 0,
  "train_iters": 143000, "lr_decay_iters": 143000, "distributed_backend": "nccl",
  "lr_decay_style": "cosine", "warmup": 0.01, "checkpoint_factor": 1000,
  "eval_interval": 143000, "eval_iters": 10, "log_interval": 10, "steps_per_print": 10,
  "wall_clock_breakdown": true, "tokenizer_type": "HFTokenizer",
"""

_LLAMA_MODEL = {
    "pipe_parallel_size": 1,
    "model_parallel_size": 1,
    "make_vocab_size_divisible_by": 1,
    "num_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "pos_emb": "rotary",
    "rotary_pct": 1,
    "no_weight_tying": True,
    "gpt_j_residual": False,
    "output_layer_parallelism": "column",
    "norm": "rmsnorm",
    "rms_norm_epsilon": 1.0e-5,
    "scaled_upper_triang_masked_softmax_fusion": True,
    "bias_gelu_fusion": False,
    "use_bias_in_norms": False,
    "use_bias_in_attn_linear": False,
    "activation": "swiglu",
}


def _llama(**keys: object) -> str:
    return json.dumps({**_LLAMA_MODEL, **keys}, indent=1)


SAMPLE: dict[str, str] = {
    # Pythia-1B: fp32_allreduce, the bf16 `type` in the fp16 block with auto_cast, fusions
    "pythia-1B": """{
  "pipe_parallel_size": 1, "model_parallel_size": 1,
  "num_layers": 16, "hidden_size": 2048, "num_attention_heads": 8,
  "seq_length": 2048, "max_position_embeddings": 2048, "pos_emb": "rotary", "rotary_pct": 0.25,
  "no_weight_tying": true, "gpt_j_residual": true, "output_layer_parallelism": "column",
  "scaled_upper_triang_masked_softmax_fusion": true, "bias_gelu_fusion": true,
  "fp16": {"enabled": true, "type": "bfloat16", "auto_cast": true, "loss_scale": 0,
           "loss_scale_window": 1000, "initial_scale_power": 12, "hysteresis": 2,
           "min_loss_scale": 1},
  "fp32_allreduce": true,
"""
    + _PYTHIA_TRAINING
    + "}",
    # Pythia-2.8B/12B: gradient norms logged
    "pythia-2.8B": """{
  "num_layers": 32, "hidden_size": 2560, "num_attention_heads": 32,
  "seq_length": 2048, "max_position_embeddings": 2048, "pos_emb": "rotary", "rotary_pct": 0.25,
  "no_weight_tying": true, "gpt_j_residual": true,
  "fp16": {"enabled": true, "loss_scale": 0, "loss_scale_window": 1000,
           "initial_scale_power": 12, "hysteresis": 2, "min_loss_scale": 1},
  "log_grad_norm": true,
"""
    + _PYTHIA_TRAINING
    + "}",
    # Pythia-14M/31M name their own data; neox's local_setup.yml (given later) names data_path
    "pythia-14M": """{
  "pipe-parallel-size": 0, "model-parallel-size": 1,
  "num-layers": 6, "hidden-size": 128, "num-attention-heads": 4,
  "seq-length": 2048, "max-position-embeddings": 2048, "pos-emb": "rotary", "rotary-pct": 0.25,
  "no-weight-tying": true, "gpt-j-residual": true, "attention-config": [[["flash"], 6]],
  "scaled-upper-triang-masked-softmax-fusion": true, "bias-gelu-fusion": true,
  "fp16": {"fp16": true, "enabled": true, "loss_scale": 0, "initial_scale_power": 12},
  "train-data-paths": ["/mnt/pile/pile_20B_tokenizer_text_document"],
  "valid-data-paths": ["/mnt/pile/pile_20B_tokenizer_text_document"],
  "test-data-paths": ["/mnt/pile/pile_20B_tokenizer_text_document"],
  "tokenizer-type": "HFTokenizer", "vocab-file": "/mnt/pile/20B_tokenizer.json",
}""",
    # LLaMA-2-7B: attention biases off, MLP biases on (GPT-NeoX's default)
    "llama2-7B": _llama(
        seq_length=4096,
        max_position_embeddings=4096,
        intermediate_size=32768,
        mlp_multiple_of=256,
        vocab_size=32000,
    ),
    # Mistral-7B with the MLP sized as GPT-NeoX sizes it (3 x 14336) and no MLP biases
    "mistral-7B": _llama(
        num_kv_heads=8,
        seq_length=8192,
        sliding_window_width=4096,
        max_position_embeddings=131072,
        attention_config=[[["flash"], 32]],
        intermediate_size=43008,
        use_bias_in_mlp=False,
        vocab_size=32000,
    ),
    # GPT-NeoX's mistral/7B.yml as shipped: its MLP projections do not fit (GPT-NeoX stops too)
    "mistral-7B-as-shipped": _llama(
        num_kv_heads=8,
        seq_length=8192,
        sliding_window_width=4096,
        max_position_embeddings=131072,
        intermediate_size=14336,
        tokenizer_type="SPMTokenizer",
    ),
    # the DPO benchmark's model part: rmsnorm_fusion, data_types, bf16 in two ways
    "llama3-8B-post-training-model": """{
  "num_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_kv_heads": 8,
  "seq_length": 1024, "max_position_embeddings": 1024, "pos_emb": "rotary", "rotary_pct": 1,
  "rotary_emb_base": 500000, "rope_fusion": true, "no_weight_tying": true,
  "norm": "rmsnorm", "rms_norm_epsilon": 1.0e-5, "rmsnorm_fusion": true,
  "attention_config": [[["flash"], 32]], "use_bias_in_norms": false,
  "use_bias_in_attn_linear": false, "use_bias_in_mlp": false, "use_flashattn_swiglu": true,
  "activation": "swiglu", "intermediate_size": 14336, "mlp_multiple_of": 14336,
  "checkpoint_activations": false, "checkpoint_num_layers": 32,
  "precision": "bfloat16", "fp32_allreduce": true, "bf16": {"enabled": true},
  "data_types": {"grad_accum_dtype": "fp32"}, "make_vocab_size_divisible_by": 1,
  "vocab_size": 128256,
}""",
    # Llemma-34B: a descriptive attention_type next to num_kv_heads
    "llemma-34B-shape": """{
  "num_layers": 48, "hidden_size": 8192, "num_attention_heads": 64,
  "attention_type": "groupedquery", "num_kv_heads": 8,
  "seq_length": 4096, "max_position_embeddings": 4096, "pos_emb": "rotary",
  "rotary_emb_base": 1000000, "norm": "rmsnorm", "use_bias_in_norms": false,
  "use_bias_in_attn_linear": false, "activation": "swiglu", "mlp_multiple_of": 256,
}""",
    # 19M: DeepSpeed's communication logger in deepspeed_extra_args
    "19M-comms-logger": """{
  "num_layers": 6, "hidden_size": 512, "num_attention_heads": 8,
  "seq_length": 2048, "max_position_embeddings": 2048, "pos_emb": "rotary",
  "deepspeed_extra_args": {"comms_logger": {"enabled": true, "verbose": true}},
}""",
    # -- still refused, each with the key that names the missing feature --
    "rwkv-170M": """{
  "num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "seq_length": 512,
  "attention_config": [[["rwkv"], 12]], "activation": "silu",
  "bf16": {"bf16": true, "enabled": true, "loss_scale": 0, "hysteresis": 2},
}""",
    "mamba-130M": """{
  "num_layers": 24, "hidden_size": 768, "num_attention_heads": 12,
  "attention_config": [[["mamba"], 24]], "mamba_selective_scan_fusion": true,
}""",
    "125M-dmoe": """{
  "num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "pos_emb": "rotary",
  "moe_num_experts": 8, "rope_fusion": false, "layernorm_fusion": false,
}""",
    "bnb-125M": """{
  "num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "pos_emb": "rotary",
  "use_bnb_optimizer": true,
}""",
    "1-3B-transformer-engine": """{
  "num_layers": 24, "hidden_size": 2048, "num_attention_heads": 16, "pos_emb": "rotary",
  "te_layernorm_mlp": true,
}""",
    "sparse": """{
  "num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "pos_emb": "rotary",
  "attention_config": [[["sparse_fixed", "global"], 6]],
  "sparsity_config": {"block": 16, "num_local_blocks": 32},
}""",
    "llemma-7B-decay-lr-to": """{
  "num_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "pos_emb": "rotary",
  "decay_lr_to": 0.033,
}""",
}

# name -> ("dry-runs", parameters) or ("refused", pattern the error must match)
EXPECTED: dict[str, tuple[str, int | str]] = {
    "pythia-1B": ("dry-runs", 1_011_781_632),  # the published Pythia-1B size
    "pythia-2.8B": ("dry-runs", 2_775_208_960),  # the published Pythia-2.8B size
    "pythia-14M": ("dry-runs", 14_067_712),  # the published Pythia-14M size
    "llama2-7B": ("dry-runs", 6_739_251_200),  # LLaMA-2-7B + 32 x (2 x 11008 + 4096) MLP biases
    "mistral-7B": ("dry-runs", 7_241_732_096),  # the published Mistral-7B size
    "mistral-7B-as-shipped": ("refused", r"do not fit together.*intermediate_size: 43008"),
    "llama3-8B-post-training-model": ("dry-runs", 8_030_261_248),  # the published Llama-3-8B
    "llemma-34B-shape": ("dry-runs", None),
    "19M-comms-logger": ("dry-runs", None),
    "rwkv-170M": ("refused", r"attention_config = 'rwkv': the layer type 'rwkv' is not yet"),
    "mamba-130M": ("refused", r"attention_config = 'mamba'.*not yet supported"),
    "125M-dmoe": ("refused", r"moe_num_experts = 8: mixture of experts is not yet supported"),
    "bnb-125M": ("refused", r"use_bnb_optimizer = True: bitsandbytes optimizers"),
    "1-3B-transformer-engine": ("refused", r"te_layernorm_mlp = True: Transformer Engine"),
    "sparse": ("refused", r"sparsity_config = .*DeepSpeed sparse attention is not yet supported"),
    "llemma-7B-decay-lr-to": ("refused", r"unknown key 'decay_lr_to': not a GPT-NeoX key.*min_lr"),
}


# samples that name their own (non-Pythia) vocabulary come after the setup file, which names
# the Pythia tokenizer's
MODEL_LAST = {"llama2-7B", "mistral-7B", "llama3-8B-post-training-model"}


def _write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(SAMPLE[name], encoding="utf-8")
    return path


def _files(tmp_path: Path, name: str) -> list[Path]:
    model = _write(tmp_path, name)
    return [SETUP, model] if name in MODEL_LAST else [model, SETUP]


@pytest.mark.parametrize("name", sorted(SAMPLE))
def test_suite_sample_has_its_expected_status(name: str, tmp_path: Path, capsys) -> None:
    status, detail = EXPECTED[name]
    code = main([*map(str, _files(tmp_path, name)), "--dry-run"])
    out, err = capsys.readouterr()
    if status == "dry-runs":
        assert code == 0, err
        if detail is not None:
            assert f"parameters: {detail:,}\n" in out
    else:
        assert code == 2
        assert re.search(detail, err), err
        assert "Traceback" not in err


def _cfg(tmp_path: Path, name: str):
    return load_config(_files(tmp_path, name))


def test_pythia_1b_keys_land_where_they_act(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "pythia-1B")
    assert cfg.precision.dtype == "bf16" and cfg.precision.fp32_allreduce
    assert cfg.fusion.scaled_upper_triang_masked_softmax_fusion and cfg.fusion.bias_gelu_fusion
    # on but without effect yet: listed with the reason
    assert "tanh approximation" in cfg.ignored["bias_gelu_fusion"]
    assert "fp16.auto_cast" in cfg.ignored


def test_later_setup_file_names_the_data(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "pythia-14M")
    assert cfg.data.data_path == "data/pile/pile_text_document"
    assert cfg.data.train_data_paths is None
    assert "replaced by data_path" in cfg.ignored["train_data_paths"]
    # the other order: the model file's own paths win over the setup's data_path
    cfg = load_config([SETUP, _write(tmp_path, "pythia-14M")])
    assert cfg.data.data_path is None and cfg.data.train_data_paths
    assert "replaced by train-data-paths" in cfg.ignored["data_path"]


def test_data_path_and_split_paths_in_one_file_are_refused(tmp_path: Path) -> None:
    both = tmp_path / "both.yml"
    both.write_text(
        json.dumps(
            {
                "data_path": "a",
                "train_data_paths": ["b"],
                "valid_data_paths": ["b"],
                "test_data_paths": ["b"],
            }
        )
    )
    with pytest.raises(
        ConfigError, match=r"both.yml:1: data_path and train_data_paths .* not both"
    ):
        load_config([_write(tmp_path, "pythia-14M"), both])


def test_llama2_biases_are_independent(tmp_path: Path) -> None:
    m = _cfg(tmp_path, "llama2-7B").model
    assert (m.attention_bias, m.mlp_bias, m.norm_bias) == (False, True, False)


def test_post_training_model_part(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "llama3-8B-post-training-model")
    assert cfg.precision.dtype == "bf16"
    assert cfg.fusion.rmsnorm_fusion and cfg.fusion.rope_fusion
    assert "rmsnorm_fusion" in cfg.ignored and "data_types.grad_accum_dtype" in cfg.ignored
    assert "checkpoint_activations, which is off" in cfg.ignored["checkpoint_num_layers"]
    assert cfg.model.intermediate_size == 14336


def test_mistral_window(tmp_path: Path) -> None:
    m = _cfg(tmp_path, "mistral-7B").model
    assert (m.sliding_window_width, m.num_kv_heads, m.intermediate_size) == (4096, 8, 14336)


def test_attention_type_must_describe_the_heads(tmp_path: Path) -> None:
    assert "groupedquery" in _cfg(tmp_path, "llemma-34B-shape").ignored["attention_type"]
    wrong = tmp_path / "mq.yml"
    wrong.write_text('{"attention_type": "multiquery"}')
    with pytest.raises(ConfigError, match="does not describe num_kv_heads = 8"):
        load_config([_write(tmp_path, "llemma-34B-shape"), SETUP, wrong])


def test_deepspeed_precision_blocks(tmp_path: Path, tiny: Path, write) -> None:
    rwkv_block = write("bf16.yml", '{"bf16": {"bf16": true, "enabled": true, "loss_scale": 0}}')
    cfg = load_config([tiny, rwkv_block])
    assert cfg.precision.dtype == "bf16" and "bf16.loss_scale" in cfg.ignored
    amp = write("amp.yml", '{"amp": {"enabled": true, "opt_level": "O1"}}')
    assert load_config([tiny, amp]).precision.dtype == "fp16"
    amp2 = write("amp2.yml", '{"amp": {"enabled": true, "opt_level": "O2"}}')
    with pytest.raises(ConfigError, match=r"amp.opt_level = 'O2'.*not yet supported"):
        load_config([tiny, amp2])
    typo = write("typo.yml", '{"bf16": {"enabeld": true}}')
    with pytest.raises(ConfigError, match="unknown key 'enabeld' in the bf16 block"):
        load_config([tiny, typo])


def _hf_count(cfg) -> int:
    import torch
    import transformers

    from neox_core.models.hf_names import hf_architecture, hf_config_kwargs

    arch = hf_architecture(cfg.model)
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    with torch.device("meta"):
        model = getattr(transformers, arch)(config_class(**hf_config_kwargs(cfg.model)))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "hf_class"),
    [
        ("llama2-7B", "LlamaForCausalLM"),
        ("mistral-7B", "MistralForCausalLM"),
        ("llama3-8B-post-training-model", "LlamaForCausalLM"),
    ],
)
def test_counts_equal_transformers_models_of_the_same_shape(name, hf_class, tmp_path) -> None:
    pytest.importorskip("transformers")
    from neox_core.models.hf_names import hf_architecture

    cfg = _cfg(tmp_path, name)
    assert hf_architecture(cfg.model) == hf_class
    assert parameter_count(cfg.model) == _hf_count(cfg) == EXPECTED[name][1]


# Pythia's suite configs at tensor-parallel size 1 (6.9B and 12B pad the vocabulary for TP 2
# and 4, so their published sizes come with tensor parallelism): (layers, hidden, heads)
PYTHIA = {
    "14M": ((6, 128, 4), 14_067_712),
    "31M": ((6, 256, 8), 30_494_720),
    "70M": ((6, 512, 8), 70_426_624),
    "160M": ((12, 768, 12), 162_322_944),
    "410M": ((24, 1024, 16), 405_334_016),
    "1B": ((16, 2048, 8), 1_011_781_632),
    "1.4B": ((24, 2048, 16), 1_414_647_808),
    "2.8B": ((32, 2560, 32), 2_775_208_960),
}


@pytest.mark.parametrize("size", sorted(PYTHIA))
def test_pythia_shapes_dry_run_to_the_published_sizes(size: str, tmp_path: Path, capsys) -> None:
    (layers, hidden, heads), published = PYTHIA[size]
    model = tmp_path / f"pythia-{size}.yml"
    model.write_text(
        "{"
        f'"num_layers": {layers}, "hidden_size": {hidden}, "num_attention_heads": {heads}, '
        '"seq_length": 2048, "max_position_embeddings": 2048, "pos_emb": "rotary", '
        '"rotary_pct": 0.25, "no_weight_tying": true, "gpt_j_residual": true,'
        + _PYTHIA_TRAINING
        + "}"
    )
    assert main([str(model), str(SETUP), "--dry-run"]) == 0
    assert f"parameters: {published:,}\n" in capsys.readouterr().out
