"""Sampling filters agree with transformers' logits processors; seeded sampling repeats."""

from __future__ import annotations

import pytest
import torch

from neox_core.generation.sampling import SamplingParams, filter_logits, next_tokens

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize(("top_k", "top_p"), [(5, 0.0), (0, 0.7), (12, 0.9), (0, 0.0)])
def test_filters_match_transformers(top_k, top_p) -> None:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(top_k))
    expected = logits.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = filter_logits(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(got)])


def test_top_p_keeps_at_least_one_token() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    got = filter_logits(logits, 0, 0.01)
    assert torch.isfinite(got).tolist() == [[True, False, False]]


def test_seeded_sampling_repeats_and_seeds_differ() -> None:
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, top_k=40, top_p=0.9)

    def draw(seed: int) -> list[int]:
        return next_tokens(logits, params, torch.Generator().manual_seed(seed)).tolist()

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert next_tokens(logits, SamplingParams(), None).tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("kw", [dict(temperature=-1.0), dict(top_k=-2), dict(top_p=1.5)])
def test_bad_parameters_are_refused(kw) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**kw)
