"""Sliding-window attention (GPT-NeoX's `sliding_window_width`, Mistral) against transformers.

`test_hf_parity.py` runs the tiny Mistral variant through the shared parity checks; these tests
pin what the window means: the mask itself, that the window changes the logits on sequences
longer than it (so the parity test is not vacuous), and the off-by-one between GPT-NeoX's width
(a query sees itself and w before it) and HF's `sliding_window` (w + 1 keys in all).
"""

from __future__ import annotations

import pytest
import torch

from neox_core.models import build_model
from neox_core.models.hf_names import hf_architecture, hf_config_kwargs, load_hf_state_dict
from neox_core.models.layers import causal_window_mask

transformers = pytest.importorskip("transformers")


def test_mask_sees_itself_and_the_window_before_it() -> None:
    mask = causal_window_mask(6, 6, 2, torch.device("cpu"))
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_mask_for_cached_keys_is_the_last_rows_of_the_full_mask() -> None:
    """A KV-cache step (1 or a few new queries over all keys so far) uses the same helper."""
    full = causal_window_mask(9, 9, 3, torch.device("cpu"))
    for q_len in (1, 4):
        assert torch.equal(causal_window_mask(q_len, 9, 3, torch.device("cpu")), full[-q_len:])


def test_attention_module_exposes_the_window(make_llama) -> None:
    model = build_model(make_llama(sliding_window_width=7), seed=0)
    assert all(layer.attention.sliding_window == 7 for layer in model.layers)


def _hf_mistral(cfg):
    assert hf_architecture(cfg) == "MistralForCausalLM"
    config = transformers.MistralConfig(**hf_config_kwargs(cfg), attn_implementation="sdpa")
    torch.manual_seed(0)
    return transformers.MistralForCausalLM(config).eval()


def _logits(cfg, hf_state, ids):
    model = build_model(cfg, seed=None).eval()
    load_hf_state_dict(model, hf_state)
    with torch.no_grad():
        return model(ids)


def test_window_is_hf_sliding_window_minus_one(make_llama) -> None:
    cfg = make_llama(num_kv_heads=2, sliding_window_width=4, num_layers=3)
    hf = _hf_mistral(cfg)
    assert hf.config.sliding_window == 5
    ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(ids).logits
    state = hf.state_dict()
    same = _logits(cfg, state, ids)
    assert (same - expected).abs().max().item() < 1e-5
    for other in (3, 5, None):  # off by one either way, or no window: clearly different
        cfg_other = make_llama(num_kv_heads=2, sliding_window_width=other, num_layers=3)
        diff = (_logits(cfg_other, state, ids) - expected).abs().max().item()
        assert diff > 1e-3, (other, diff)


def test_window_longer_than_the_sequence_is_plain_causal(make_llama) -> None:
    ids = torch.randint(0, 100, (1, 10), generator=torch.Generator().manual_seed(3))
    wide = build_model(make_llama(sliding_window_width=9), seed=5).eval()
    full = build_model(make_llama(), seed=5).eval()
    narrow = build_model(make_llama(sliding_window_width=8), seed=5).eval()
    with torch.no_grad():
        assert torch.equal(wide(ids), full(ids))
        assert not torch.allclose(narrow(ids), full(ids))
