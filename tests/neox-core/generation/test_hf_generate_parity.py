"""Greedy decoding equals transformers' `generate` token for token on the exported weights.

neox reads the tensor-parallel-2 checkpoint (merged on load); transformers reads what
`neox-ckpt neox-to-hf` exported from it. Both run fp32 on CPU.
"""

from __future__ import annotations

import pytest
import torch

from neox_core.generation.generate import generate
from neox_core.generation.kv_cache import allocate_cache, forward_cached
from neox_core.generation.loading import load_inference_config, load_inference_model
from neox_core.generation.sampling import SamplingParams

transformers = pytest.importorskip("transformers")

NEW = 24


@pytest.fixture(scope="module", params=["pythia", "llama"])
def pair(request, inference_checkpoints):
    ck = inference_checkpoints[request.param]
    cfg = load_inference_config(list(ck.configs))
    ours = load_inference_model(cfg, device="cpu", dtype="fp32").model
    hf = transformers.AutoModelForCausalLM.from_pretrained(ck.hf_dir, dtype=torch.float32)
    return ours, hf.eval()


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(5)
    return [torch.randint(2, 633, (n,), generator=g).tolist() for n in (7, 1, 13, 4, 9)]


def _hf_greedy(hf, prompts: list[list[int]], pad: int) -> list[list[int]]:
    """transformers' generate on the left-padded batch, as its docs prescribe."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=None,
        )
    return out[:, width:].tolist()


def test_cached_forward_matches_the_model(pair) -> None:
    """The cache path walks the model's layers: same logits as CausalLM.forward."""
    ours, _ = pair
    ids = torch.tensor([_prompts()[2]])
    cache = allocate_cache(ours, 1, ids.shape[1] + 4)
    with torch.no_grad():
        full = ours(ids)
        cached = forward_cached(ours, cache, ids, torch.tensor([0]))
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)


def test_cached_decoding_keeps_the_sliding_window() -> None:
    """Token by token through the cache equals the full forward of a windowed (Mistral) model."""
    from neox_core.config.schema import ModelConfig
    from neox_core.models import build_model

    cfg = ModelConfig(
        architecture="llama", num_layers=2, hidden_size=32, num_attention_heads=4,
        num_kv_heads=2, intermediate_size=48, norm="rmsnorm", norm_bias=False,
        activation="swiglu", attention_bias=False, mlp_bias=False, tie_embeddings=False,
        padded_vocab_size=64, sliding_window_width=3,
    )  # fmt: skip
    model = build_model(cfg, seed=0, dtype="fp32").eval()
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    cache = allocate_cache(model, 2, ids.shape[1])
    with torch.no_grad():
        full = model(ids)
        steps = [
            forward_cached(model, cache, ids[:, i : i + 1], torch.tensor([i]))
            for i in range(ids.shape[1])
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [pytest.param(1, marks=pytest.mark.slow), 5])
def test_greedy_equals_transformers_generate(pair, batch_size) -> None:
    ours, hf = pair
    prompts = _prompts()
    expected = _hf_greedy(hf, prompts, pad=1)
    got = generate(ours, prompts, max_new_tokens=NEW, batch_size=batch_size, pad_id=1)
    assert [g.tokens for g in got] == expected
    assert not any(g.finished for g in got)  # no eos given: every row ran to the cap


@pytest.mark.slow
def test_padded_batch_equals_one_prompt_at_a_time(pair) -> None:
    ours, _ = pair
    prompts = _prompts()
    alone = [generate(ours, [p], max_new_tokens=NEW)[0].tokens for p in prompts]
    batched = generate(ours, prompts, max_new_tokens=NEW, batch_size=len(prompts), pad_id=7)
    assert [g.tokens for g in batched] == alone


def test_recompute_gives_the_cached_tokens(pair) -> None:
    ours, _ = pair
    prompts = _prompts()[:3]
    params = SamplingParams(temperature=0.9, top_k=50, top_p=0.95)
    kw = dict(max_new_tokens=10, batch_size=3, params=params, seed=4)
    cached = generate(ours, prompts, **kw)
    recomputed = generate(ours, prompts, recompute=True, **kw)
    assert [g.tokens for g in recomputed] == [g.tokens for g in cached]


def test_eos_stops_a_row_and_is_not_returned(pair) -> None:
    ours, hf = pair
    prompts = _prompts()
    reference = _hf_greedy(hf, prompts, pad=1)
    eos = reference[0][5]  # a token the first row produces at step 6
    got = generate(ours, prompts, max_new_tokens=NEW, batch_size=5, eos_id=eos, pad_id=1)
    for g, ref in zip(got, reference, strict=True):
        if eos in ref:
            assert g.finished and g.tokens == ref[: ref.index(eos)]
        else:
            assert not g.finished and g.tokens == ref
    assert got[0].finished and len(got[0].tokens) == reference[0].index(eos)
