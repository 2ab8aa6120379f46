"""Derived values computed as GPT-NeoX computes them."""

from __future__ import annotations

import json

import pytest

from neox_core.config import ConfigError, load_config
from neox_core.config.derive import gpt_neox_mlp_width, llama_mlp_width, pad_vocab_size


@pytest.mark.parametrize(
    ("vocab", "divisible", "tp", "padded"),
    [(50277, 128, 1, 50304), (50277, 128, 2, 50432), (32000, 1, 1, 32000), (50304, 128, 1, 50304)],
)
def test_pad_vocab_size(vocab: int, divisible: int, tp: int, padded: int) -> None:
    assert pad_vocab_size(vocab, divisible, tp) == padded


def test_mlp_width_conventions() -> None:
    # GELU: 4h, unchanged by a multiple of 1
    assert gpt_neox_mlp_width(768, gated=False) == (3072, 3072)
    # SwiGLU: the given size shrinks by 2/3, halves for the gate, then rounds (LLaMA-7B)
    assert gpt_neox_mlp_width(4096, True, intermediate_size=32768, multiple_of=256) == (
        22016,
        11008,
    )
    # SwiGLU default 4h -> 8/3 h
    assert gpt_neox_mlp_width(4096, True, multiple_of=256) == (11264, 5632)
    assert gpt_neox_mlp_width(64, False, expansion_factor=2.0) == (128, 128)
    # GPT-NeoX's older `mlp_type: llama` sizing
    assert llama_mlp_width(4096) == 11008
    assert llama_mlp_width(5120) == 13824


def test_swiglu_intermediate_size_in_a_config(tiny, write) -> None:
    extra = write(
        "s.yml",
        '{"activation": "swiglu", "intermediate_size": 768, "mlp_multiple_of": 64,'
        ' "use_bias_in_mlp": false, "use_bias_in_attn_linear": false}',
    )
    m = load_config([tiny, extra]).model
    assert m.intermediate_size == 256 and m.architecture == "llama"


def test_mlp_sizes_that_do_not_fit_are_rejected(tiny, write) -> None:
    extra = write("s.yml", '{"intermediate_size": 64, "mlp_multiple_of": 64}')
    with pytest.raises(ConfigError, match="do not fit together"):
        load_config([tiny, extra])


def test_defaults_follow_gpt_neox(tiny) -> None:
    cfg = load_config([tiny])
    m = cfg.model
    assert m.num_kv_heads == 4 and cfg.sources["model.num_kv_heads"] == "derived"
    assert m.intermediate_size == 256
    assert m.padded_vocab_size == 1024
    assert m.tie_embeddings is True  # GPT-NeoX ties unless no_weight_tying
    assert cfg.schedule.lr_decay_iters == cfg.training.train_iters
    assert cfg.training.train_batch_size == 1
    assert cfg.optimizer.lr == 1e-3


def test_lr_decay_iters_defaults_to_train_iters(tiny, write) -> None:
    extra = write("t.yml", '{"train_iters": 500}')
    assert load_config([tiny, extra]).schedule.lr_decay_iters == 500
    extra = write("t2.yml", '{"train_iters": 500, "lr_decay_iters": 300}')
    assert load_config([tiny, extra]).schedule.lr_decay_iters == 300


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"train_micro_batch_size_per_gpu": 4, "gas": 3}, (12, 4, 3, 1)),
        ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 8}, (32, 8, 4, 1)),
        ({"train_batch_size": 32, "gradient_accumulation_steps": 2}, (32, 16, 2, 1)),
        ({"train_batch_size": 16}, (16, 16, 1, 1)),
        # all three given: the data-parallel size they imply
        ({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4, "gas": 2}, (64, 4, 2, 8)),
        (
            {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4, "data_parallel_size": 4},
            (64, 4, 4, 4),
        ),
    ],
)
def test_batch_parameters(tiny, write, keys: dict, expected: tuple) -> None:
    extra = write("b.yml", json.dumps(keys))
    t = load_config([tiny, extra])
    got = (
        t.training.train_batch_size,
        t.training.micro_batch_size,
        t.training.gradient_accumulation_steps,
        t.parallel.data_parallel_size,
    )
    assert got == expected


def test_inconsistent_batch_is_rejected(tiny, write) -> None:
    extra = write(
        "b.yml",
        '{"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4, "gas": 2,'
        ' "data_parallel_size": 2}',
    )
    with pytest.raises(ConfigError, match=r"train_batch_size \(30.*must equal"):
        load_config([tiny, extra])


def test_vocab_size_from_hf_tokenizer_file(tiny, write, tmp_path) -> None:
    vocab = {f"t{i}": i for i in range(300)}
    added = [{"id": 299, "content": "t299"}, {"id": 300, "content": "<|endoftext|>"}]
    tok = tmp_path / "tokenizer.json"
    tok.write_text(json.dumps({"model": {"vocab": vocab}, "added_tokens": added}))
    model = write(
        "m.yml",
        '{"num_layers": 1, "hidden_size": 8, "num_attention_heads": 2,'
        ' "pos_emb": "rotary", "seq_length": 16}',
    )
    setup = write("s.yml", json.dumps({"tokenizer_type": "HFTokenizer", "vocab_file": str(tok)}))
    cfg = load_config([model, setup])
    assert cfg.model.vocab_size == 301 and cfg.model.padded_vocab_size == 384
    assert cfg.sources["model.vocab_size"].startswith("derived from")
    agree = write("agree.yml", '{"vocab_size": 301}')
    assert load_config([model, setup, agree]).model.vocab_size == 301
    disagree = write("disagree.yml", '{"vocab_size": 50277}')
    with pytest.raises(ConfigError, match=r"vocab_size = 50277 but the tokenizer .* has 301"):
        load_config([model, setup, disagree])


def test_vocab_size_from_gpt2_vocab_json(write, tmp_path) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({f"t{i}": i for i in range(50257)}))
    model = write(
        "m.yml",
        '{"num_layers": 1, "hidden_size": 8, "num_attention_heads": 2,'
        ' "pos_emb": "rotary", "seq_length": 16}',
    )
    setup = write("s.yml", json.dumps({"vocab-file": str(vocab)}))
    assert load_config([model, setup]).model.padded_vocab_size == 50304


def test_unknown_vocab_size_is_an_error(write) -> None:
    model = write(
        "m.yml",
        '{"num_layers": 1, "hidden_size": 8, "num_attention_heads": 2,'
        ' "pos_emb": "rotary", "seq_length": 16, "vocab-file": "missing.json"}',
    )
    with pytest.raises(ConfigError, match="cannot size the vocabulary: set vocab_size"):
        load_config([model])


def test_padded_vocab_size_given_must_agree(tiny, write) -> None:
    ok = write("ok.yml", '{"padded_vocab_size": 1024}')
    assert load_config([tiny, ok]).model.padded_vocab_size == 1024
    bad = write("bad.yml", '{"padded_vocab_size": 1000}')
    with pytest.raises(ConfigError, match=r"padded_vocab_size = 1000 but .* is 1024"):
        load_config([tiny, bad])
