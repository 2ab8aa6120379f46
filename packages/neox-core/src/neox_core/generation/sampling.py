"""Choosing the next token: greedy, or temperature / top-k / top-p sampling from a seeded RNG.

The order is GPT-NeoX's and transformers': divide by the temperature, keep the k most likely
tokens, then the smallest set whose probability reaches top_p (always at least one token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 0.0  # 0 (or 1) = off

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature {self.temperature} must not be negative")
        if self.top_k < 0:
            raise ValueError(f"top_k {self.top_k} must not be negative")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p {self.top_p} must be in [0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """`logits` [B, V] with everything outside top-k / the top-p nucleus set to -inf."""
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the ones before it already reach top_p; the first always stays
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick(logits: torch.Tensor, params: SamplingParams, noise: torch.Tensor | None) -> torch.Tensor:
    """The next token of each row [B] from logits [B, V], with no host synchronisation.

    Sampling uses the exponential race: with E ~ Exp(1) drawn per token (`noise` [B, V]),
    argmax(p / E) is distributed as p, so a draw is a few elementwise ops and an argmax
    that a compiled (CUDA-graph) step can hold; the random numbers come from outside.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    assert noise is not None, "sampling needs noise (see draw_noise)"
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    # a zero draw (possible in principle) must not turn a filtered-out 0 / 0 into NaN
    return (scaled.softmax(dim=-1) / noise.clamp(min=1e-30)).argmax(dim=-1)


def draw_noise(out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Fill `out` (fp32 [B, V]) with Exp(1) draws for `pick`, from `generator`."""
    return out.exponential_(generator=generator)


def next_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> torch.Tensor:
    """The next token of each row [B] from the last position's logits [B, V]."""
    if params.greedy:
        return pick(logits, params, None)
    noise = draw_noise(torch.empty(logits.shape, device=logits.device), generator)
    return pick(logits, params, noise)
