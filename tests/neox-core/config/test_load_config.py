"""Merging, key spellings, translation and the errors that name file, line and key."""

from __future__ import annotations

import json

import pytest

from neox_core.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    with_world_size,
)


def test_later_files_win_and_sources_name_file_and_line(tiny, write) -> None:
    second = write("second.yml", '{\n  "hidden_size": 128,\n  "train-iters": 10,\n}\n')
    cfg = load_config([tiny, second])
    assert cfg.model.hidden_size == 128
    assert cfg.sources["model.hidden_size"] == f"{second}:2"
    assert cfg.sources["model.num_layers"] == f"{tiny}:3"
    assert cfg.sources["training.train_iters"] == f"{second}:3"
    assert cfg.sources["model.init_std"] == "default"
    assert cfg.sources["model.padded_vocab_size"] == "derived"
    assert cfg.raw["hidden_size"] == 128 and cfg.raw["num_layers"] == 2


def test_dash_and_underscore_spellings_are_the_same_key(tiny, write) -> None:
    a = write("a.yml", '{"train-iters": 5}')
    b = write("b.yml", '{"train_iters": 7}')
    assert load_config([tiny, a, b]).training.train_iters == 7
    assert load_config([tiny, b, a]).training.train_iters == 5


def test_both_spellings_in_one_file_is_an_error(tiny, write) -> None:
    bad = write("bad.yml", '{\n  "train-iters": 5,\n  "train_iters": 7,\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.yml:3: 'train_iters' repeats 'train-iters'"):
        load_config([tiny, bad])


def test_unknown_key_names_file_line_and_closest_key(tiny, write) -> None:
    bad = write("typo.yml", '{\n  "seed": 1,\n  "num-atention-heads": 8,\n}\n')
    with pytest.raises(ConfigError) as err:
        load_config([tiny, bad])
    message = str(err.value)
    assert f"{bad}:3" in message
    assert "unknown key 'num-atention-heads'" in message
    assert "did you mean 'num_attention_heads'" in message


def test_unsupported_feature_is_rejected_as_not_yet_supported(tiny, write) -> None:
    bad = write("moe.yml", '{"moe_num_experts": 8}')
    with pytest.raises(ConfigError, match=r"moe\.yml:1: moe_num_experts = 8: .*not yet supported"):
        load_config([tiny, bad])


def test_row_parallel_output_layer_is_refused_naming_key_value_and_column(tiny, write) -> None:
    """GPT-NeoX's `output_layer_parallelism: row` is refused at config load (before any
    process allocates memory), naming the key, the value and the supported `column`."""
    for spelling in ("output_layer_parallelism", "output-layer-parallelism"):
        bad = write("row.yml", f'{{"{spelling}": "row", "model-parallel-size": 2}}')
        with pytest.raises(ConfigError) as err:
            load_config([tiny, bad])
        message = str(err.value)
        assert f"{bad}:1: output_layer_parallelism = 'row'" in message, message
        assert "row-parallel output layer is not yet supported" in message, message
        assert message.endswith("supported: 'column'"), message
    for value in ("column", "Column"):
        cfg = load_config([tiny, write("col.yml", f'{{"output_layer_parallelism": "{value}"}}')])
        assert "output_layer_parallelism" in cfg.ignored


def test_unsupported_key_at_its_harmless_value_is_accepted_and_listed(tiny, write) -> None:
    ok = write("ok.yml", '{"use_mup": false, "bias-gelu-fusion": true}')
    cfg = load_config([tiny, ok])
    assert "use_mup" in cfg.ignored and "harmless" in cfg.ignored["use_mup"]
    assert "bias_gelu_fusion" in cfg.ignored and str(ok) in cfg.ignored["bias_gelu_fusion"]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"num_layers": "two"}', r"bad\.yml:1: num_layers: expected an integer, got 'two'"),
        ('{"checkpoint_activations": 1}', r"checkpoint_activations: expected true or false"),
        ('{"train_data_paths": "a"}', r"train_data_paths: expected a list of strings"),
        ('{"warmup": 5}', r"bad\.yml:1: warmup = 5.0: is a fraction"),
        ('{"hidden_dropout": 1.5}', r"hidden_dropout = 1.5: must be in \[0, 1\)"),
        ('{"rotary_pct": 0}', r"rotary_pct = 0.0: must be in \(0, 1\]"),
        ('{"num_kv_heads": 3}', r"num_kv_heads = 3: must divide num_attention_heads"),
        ('{"hidden_size": 66}', r"hidden_size = 66: must be divisible by num_attention_heads"),
        ('{"lr_decay_style": "exponential"}', r"'exponential': not yet supported by neox"),
        ('{"lr_decay_style": "cosin"}', r"lr_decay_style = 'cosin': expected one of"),
        ('{"init_method": "magic"}', r"init_method = 'magic': expected one of"),
        ('{"seq_length": 4096}', r"max-position-embeddings = 128: must be at least seq_length"),
        ('{"model_parallel_size": 3}', r"model_parallel_size = 3 does not divide num_attention"),
        (
            '{"num_kv_heads": 2, "model_parallel_size": 4, "intermediate_size": 30}',
            r"model_parallel_size = 4 does not divide the MLP width intermediate_size = 30",
        ),
        ('{"zero_optimization": {"stage": 4}}', r"zero_optimization.stage = 4: expected a ZeRO"),
        (
            '{"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}',
            r"offload_param = True: parameter offload needs ZeRO stage 3",
        ),
        (
            '{"zero_optimization": {"stage": 1, "bucket": 5}}',
            r"unknown key zero_optimization.'bucket'",
        ),
        (
            '{"zero_gather_dtype": "fp16"}',
            r"zero_gather_dtype = 'fp16': expected auto, fp32 or bf16",
        ),
        ('{"zero_gather_dtype": "bf16"}', r"'bf16': bf16 gathers need ZeRO stage 1, 2 or 3"),
        (
            '{"zero_gather_dtype": "bf16", "zero_optimization": {"stage": 1}}',
            r"zero_gather_dtype = 'bf16': bf16 gathers need precision bf16",
        ),
        ('{"sequence_parallel": true}', r"sequence_parallel = True: sequence parallelism needs"),
        ('{"pipe_parallel_size": 4, "num_layers": 3}', r"4 stages .* only num_layers = 3"),
        ('{"pipe_schedule": "dualpipe"}', r"pipe_schedule = 'dualpipe': expected gpipe, 1f1b"),
        ('{"min_lr": 1.0}', r"min_lr = 1.0: must not exceed lr"),
        ('{"split": "a,b"}', r"split = 'a,b': expected comma-separated"),
    ],
)
def test_type_and_range_errors_name_the_key(tiny, write, text: str, pattern: str) -> None:
    bad = write("bad.yml", text)
    with pytest.raises(ConfigError, match=pattern):
        load_config([tiny, bad])


def test_bf16_gathers_load_with_bf16_precision_and_zero(tiny, write) -> None:
    extra = write(
        "gather.yml",
        '{"precision": "bfloat16", "zero_optimization": {"stage": 3}, "zero_gather_dtype": "bf16"}',
    )
    cfg = load_config([tiny, extra])
    assert (cfg.parallel.zero_stage, cfg.parallel.zero_gather_dtype) == (3, "bf16")
    assert load_config([tiny]).parallel.zero_gather_dtype == "fp32"


@pytest.mark.parametrize(
    ("settings", "gather"),
    [
        ('"precision": "bfloat16", "zero_optimization": {"stage": 1}', "bf16"),
        ('"precision": "bfloat16", "zero_optimization": {"stage": 3}', "bf16"),
        ('"precision": "bfloat16", "zero_optimization": {"stage": 0}', "fp32"),
        ('"precision": "fp16", "zero_optimization": {"stage": 2}', "fp32"),
        ('"precision": "fp32", "zero_optimization": {"stage": 2}', "fp32"),
        ('"precision": "fp8", "zero_optimization": {"stage": 1}', "fp32"),
        ('"precision": "bfloat16", "zero_optimization": {"stage": 1}, "zero_gather_dtype": "fp32"',
         "fp32"),
        ('"precision": "bfloat16", "zero_optimization": {"stage": 1}, "zero_gather_dtype": "auto"',
         "bf16"),
    ],
)  # fmt: skip
def test_zero_gather_dtype_auto_gathers_bf16_where_it_applies(tiny, write, settings, gather):
    """The default ("auto") is bf16 gathers under bf16 precision and ZeRO 1-3, else fp32; a
    value given stays."""
    cfg = load_config([tiny, write("gather.yml", "{" + settings + "}")])
    assert cfg.parallel.zero_gather_dtype == gather


def test_optimizer_block_fills_the_optimizer_group(tiny, write) -> None:
    opt = write(
        "opt.yml",
        """\
        {
          "optimizer": {
            "type": "Adam",
            "params": {"lr": 0.0006, "betas": [0.9, 0.95], "eps": 1.0e-8},
          },
          "weight-decay": 0.1,
          "gradient_clipping": 0.5,
        }
        """,
    )
    cfg = load_config([tiny, opt])
    o = cfg.optimizer
    assert (o.type, o.lr, o.betas, o.eps, o.weight_decay, o.clip_grad) == (
        "adam",
        0.0006,
        (0.9, 0.95),
        1e-8,
        0.1,
        0.5,
    )
    assert cfg.sources["optimizer.lr"] == f"{opt}:4"


def test_optimizer_errors(tiny, write) -> None:
    bad = write("o.yml", '{"optimizer": {"type": "sm3", "params": {"lr": 0.1}}}')
    with pytest.raises(ConfigError, match=r"optimizer.type = 'sm3'.*not yet supported"):
        load_config([tiny, bad])
    bad = write("o2.yml", '{"optimizer": {"type": "Adam", "params": {"lr": 0.1, "beta": 1}}}')
    with pytest.raises(ConfigError, match=r"optimizer.params.beta .*did you mean 'betas'"):
        load_config([tiny, bad])
    bad = write("o3.yml", '{"optimizer": {"type": "Adam", "params": {"lr": 0.1}}, "lr": 0.2}')
    with pytest.raises(ConfigError, match=r"lr = 0.2 disagrees with optimizer.params.lr"):
        load_config([tiny, bad])


def test_precision_blocks(tiny, write) -> None:
    fp16 = write(
        "fp16.yml",
        '{"fp16": {"fp16": true, "enabled": true, "loss_scale": 0, "initial_scale_power": 12}}',
    )
    cfg = load_config([tiny, fp16])
    assert cfg.precision.dtype == "fp16" and cfg.precision.loss_scale is None
    assert cfg.precision.initial_scale_power == 12 and cfg.precision.fp32_master_weights
    bf16 = write("bf16.yml", '{"bf16": {"enabled": true}, "precision": "bfloat16"}')
    assert load_config([tiny, bf16]).precision.dtype == "bf16"
    legacy = write("legacy.yml", '{"fp16": {"enabled": true, "type": "bfloat16"}}')
    assert load_config([tiny, legacy]).precision.dtype == "bf16"
    assert load_config([tiny]).precision.dtype == "fp32"
    clash = write("clash.yml", '{"fp16": {"enabled": true}, "precision": "bfloat16"}')
    with pytest.raises(ConfigError, match="conflicting precision settings"):
        load_config([tiny, clash])
    typo = write("typo.yml", '{"fp16": {"enabled": true, "loss_scale_windo": 10}}')
    with pytest.raises(ConfigError, match=r"'loss_scale_windo' in the fp16 block.*window"):
        load_config([tiny, typo])


def test_zero_block_maps_stage_and_offload_and_reports_knobs(tiny, write) -> None:
    z = write(
        "z.yml",
        """{"zero_optimization": {"stage": 3, "overlap_comm": true, "reduce_bucket_size": 5e8,
             "offload_optimizer": {"device": "cpu", "pin_memory": true},
             "offload_param": {"device": "cpu"}},
            "model-parallel-size": 2, "sequence_parallel": true}""",
    )
    cfg = load_config([tiny, z])
    p = cfg.parallel
    assert (p.zero_stage, p.offload_optimizer, p.offload_param) == (3, True, True)
    assert (p.tensor_parallel_size, p.sequence_parallel) == (2, True)
    assert "overlap" in cfg.ignored["zero_optimization.overlap_comm"]
    assert "z.yml" in cfg.ignored["zero_optimization.reduce_bucket_size"]
    assert cfg.sources["parallel.zero_stage"].startswith(str(z))
    old = write("old.yml", '{"zero_optimization": {"stage": 1, "cpu_offload": true}}')
    assert load_config([tiny, old]).parallel.offload_optimizer
    nvme = write(
        "nvme.yml", '{"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}'
    )
    with pytest.raises(
        ConfigError, match=r"offload_param.device = 'nvme': NVMe offload is not yet"
    ):
        load_config([tiny, nvme])
    pp = write("pp.yml", '{"pipe_parallel_size": 2}')
    with pytest.raises(
        ConfigError, match=r"1f1b with pipe_parallel_size = 2 needs at least 2 micro"
    ):
        load_config([tiny, pp])
    sp = write("sp.yml", '{"sequence_parallel": true, "model_parallel_size": 2}')
    gpipe = write("gpipe.yml", '{"pipe_parallel_size": 2, "pipe_schedule": "gpipe"}')
    assert load_config([tiny, gpipe]).parallel.pipe_schedule == "gpipe"
    with pytest.raises(ConfigError, match=r"sequence_parallel with pipe_parallel_size > 1 is not"):
        load_config([tiny, gpipe, sp])


def test_attention_config_is_expanded_and_checked(tiny, write) -> None:
    ok = write("ok.yml", '{"attention-config": [[["flash"], 1], [["global"], 1]]}')
    assert "attention_config" in load_config([tiny, ok]).ignored
    short = write("short.yml", '{"attention-config": [[["flash"], 3]]}')
    with pytest.raises(ConfigError, match="expands to 3 layers but num_layers is 2"):
        load_config([tiny, short])
    local = write("local.yml", '{"attention-config": [[["global", "local"], 1]]}')
    with pytest.raises(ConfigError, match=r"layer type 'local' is not yet supported"):
        load_config([tiny, local])
    shape = write("shape.yml", '{"attention-config": ["flash"]}')
    with pytest.raises(ConfigError, match=r"expected a list of \[\[types...\], repeat\] pairs"):
        load_config([tiny, shape])


def test_learned_position_embeddings_are_not_supported(write) -> None:
    model = write("m.yml", '{"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4}')
    with pytest.raises(ConfigError, match=r"pos_emb is not set.*learned"):
        load_config([model])
    alibi = write("alibi.yml", '{"pos_emb": "alibi", "vocab_size": 10}')
    with pytest.raises(ConfigError, match=r"pos_emb = 'alibi'.*not yet supported"):
        load_config([model, alibi])


def test_llama_switches(tiny, write) -> None:
    llama = write(
        "llama.yml",
        """\
        {
          "norm": "rmsnorm", "rms_norm_epsilon": 1.0e-6, "use_bias_in_norms": false,
          "use_bias_in_attn_linear": false, "mlp_type": "llama", "activation": "silu",
          "no-weight-tying": true, "num_kv_heads": 2,
        }
        """,
    )
    m = load_config([tiny, llama]).model
    assert (m.architecture, m.norm, m.norm_eps, m.norm_bias) == ("llama", "rmsnorm", 1e-6, False)
    assert (m.attention_bias, m.mlp_bias) == (False, False)
    assert (m.activation, m.tie_embeddings, m.num_kv_heads) == ("swiglu", False, 2)
    # GPT-NeoX's LLaMA-2 configs: attention biases off, MLP biases on (its default)
    mixed = write("mixed.yml", '{"use_bias_in_attn_linear": false}')
    m = load_config([tiny, mixed]).model
    assert (m.attention_bias, m.mlp_bias, m.norm_bias) == (False, True, True)
    geglu = write("geglu.yml", '{"activation": "geglu"}')
    with pytest.raises(ConfigError, match=r"activation = 'geglu'.*not yet supported"):
        load_config([tiny, geglu])


def test_overrides_take_gpt_neox_keys_or_dotted_fields(tiny) -> None:
    cfg = load_config([tiny], {"train-iters": 3, "training.seed": 7})
    assert cfg.training.train_iters == 3 and cfg.sources["training.train_iters"] == "override"
    assert cfg.training.seed == 7
    with pytest.raises(ConfigError, match="unknown key 'trian_iters'"):
        load_config([tiny], {"trian_iters": 3})
    with pytest.raises(ConfigError, match="training has no field 'sed'"):
        load_config([tiny], {"training.sed": 3})
    with pytest.raises(ConfigError, match=r"override: training\.seed: expected an integer"):
        load_config([tiny], {"training.seed": "x"})
    cfg = load_config([tiny], {"optimizer.betas": [0.8, 0.9], "model.num_kv_heads": None})
    assert cfg.optimizer.betas == (0.8, 0.9) and cfg.model.num_kv_heads == 4


def test_dict_round_trip_is_json_able(tiny, write) -> None:
    extra = write("e.yml", '{"optimizer": {"type": "Adam", "params": {"betas": [0.9, 0.95]}}}')
    cfg = load_config([tiny, extra])
    as_json = json.loads(json.dumps(config_to_dict(cfg)))
    back = config_from_dict(as_json)
    assert back == cfg
    assert back.optimizer.betas == (0.9, 0.95)
    with pytest.raises(ConfigError, match="model has no field"):
        config_from_dict({"model": {"hidden": 1}})


def test_config_dicts_from_before_the_bias_split_load(tiny) -> None:
    """Checkpoints written when one `use_bias` switched every linear bias still load."""
    saved = config_to_dict(load_config([tiny]))
    for both in (True, False):
        model = {k: v for k, v in saved["model"].items() if k not in ("attention_bias", "mlp_bias")}
        back = config_from_dict({**saved, "model": {**model, "use_bias": both}})
        assert (back.model.attention_bias, back.model.mlp_bias) == (both, both)


def test_data_paths_checks(tiny, write) -> None:
    paths = write(
        "p.yml",
        '{"train_data_paths": ["a", "b"], "valid_data_paths": ["v"], "test_data_paths": ["t"]}',
    )
    cfg = load_config([tiny, paths])
    assert cfg.data.train_data_weights == [1.0, 1.0]
    assert cfg.sources["data.train_data_weights"] == "derived"
    partial = write("partial.yml", '{"train_data_paths": ["a"]}')
    with pytest.raises(ConfigError, match="missing valid, test_data_paths"):
        load_config([tiny, partial])
    weights = write("w.yml", '{"train_data_weights": [1.0]}')
    with pytest.raises(ConfigError, match="1 weights for 2 paths"):
        load_config([tiny, paths, weights])


def test_with_world_size_rederives_data_parallel_batch(tiny, write) -> None:
    batch = write("b.yml", '{"train_micro_batch_size_per_gpu": 4, "gas": 2}')
    cfg = load_config([tiny, batch])
    assert cfg.training.train_batch_size == 8
    eight = with_world_size(cfg, 8)
    assert eight.parallel.data_parallel_size == 8 and eight.training.train_batch_size == 64
    fixed = write("f.yml", '{"train_micro_batch_size_per_gpu": 4, "train_batch_size": 32}')
    cfg = load_config([tiny, fixed])
    assert cfg.training.gradient_accumulation_steps == 8
    four = with_world_size(cfg, 4)
    assert four.training.gradient_accumulation_steps == 2
    with pytest.raises(ConfigError, match="not a multiple"):
        with_world_size(cfg, 3)
