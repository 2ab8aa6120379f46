"""Batched autoregressive generation: left-padded prompts, a KV cache, stop tokens and strings.

`generate` takes token lists and returns token lists; text, files and modes live in
`samples.py`. Rows of a batch stop independently (end-of-document token, a stop check, or
`max_new_tokens`); the batch stops when every row has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from neox_core.generation.kv_cache import KVCache, allocate_cache, forward_cached
from neox_core.generation.sampling import SamplingParams, next_tokens
from neox_core.models.decoder import CausalLM

GREEDY = SamplingParams()

# (row index in the batch, tokens generated so far) -> stop now
StopCheck = Callable[[int, list[int]], bool]


@dataclass
class Generated:
    tokens: list[int]  # new tokens, without the end-of-document token
    finished: bool  # ended by the end-of-document token or a stop check, not by the length cap


class _Step:
    """One forward over the cache; compiled once per shape when `compile` is set.

    `compile` is True (torch.compile's default mode) or a mode name such as
    "reduce-overhead" (CUDA graphs: the cache is marked static so it can be captured).
    """

    def __init__(self, model: CausalLM, compile: bool | str) -> None:
        self.model = model
        self.compiled = bool(compile)
        self.caches: dict[tuple[int, int], KVCache] = {}
        self.fn = forward_cached
        if compile:
            mode = compile if isinstance(compile, str) else None
            self.fn = torch.compile(forward_cached, dynamic=False, mode=mode)

    def new_cache(self, batch: int, slots: int) -> KVCache:
        """A zeroed cache; compiled steps reuse one per shape so CUDA graphs stay valid."""
        if not self.compiled:
            return allocate_cache(self.model, batch, slots)
        cache = self.caches.get((batch, slots))
        if cache is None:
            cache = allocate_cache(self.model, batch, slots)
            for t in (*cache.keys, *cache.values, cache.valid, cache.cos, cache.sin):
                torch._dynamo.mark_static_address(t)
            self.caches[(batch, slots)] = cache
        else:
            for t in (*cache.keys, *cache.values, cache.valid):
                t.zero_()
        return cache

    def __call__(
        self, cache: KVCache, ids: torch.Tensor, slots: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        return self.fn(self.model, cache, ids, slots, real)


def _left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            real[i, width - len(p) :] = True
    return ids.to(device), real.to(device)


@torch.no_grad()
def generate_batch(
    model: CausalLM,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    params: SamplingParams = GREEDY,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    stop_check: StopCheck | None = None,
    recompute: bool = False,
    pad_id: int = 0,
    step: _Step | None = None,
    limits: Sequence[int] | None = None,
) -> list[Generated]:
    """Continue every prompt (a non-empty token list) by up to `max_new_tokens` tokens.

    `limits` caps rows separately (e.g. to stay within the model's context); a row that
    reaches its cap is not `finished`.

    With `recompute` (GPT-NeoX's switch) nothing is cached between steps: every step runs the
    whole sequence again, which gives the same tokens more slowly.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (use the eod token for none)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} must be at least 1")
    device = model.head_weight().device
    step = step or _Step(model, compile=False)
    ids, real = _left_pad(prompts, pad_id, device)
    b, width = ids.shape
    slots_total = width + max_new_tokens
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    finished = [False] * b

    cache = step.new_cache(b, slots_total)
    logits = step(cache, ids, torch.arange(width, device=device), real)[:, -1]
    history = ids
    for t in range(max_new_tokens):
        tokens = next_tokens(logits, params, generator)
        listed = tokens.tolist()
        for i in range(b):
            if done[i]:
                continue
            if eos_id is not None and listed[i] == eos_id:
                done[i] = finished[i] = True
                continue
            out[i].append(listed[i])
            if stop_check is not None and stop_check(i, out[i]):
                done[i] = finished[i] = True
            elif limits is not None and len(out[i]) >= limits[i]:
                done[i] = True
        if all(done) or t == max_new_tokens - 1:
            break
        # rows that are done keep decoding a pad token nobody reads; shapes stay fixed
        feed = torch.tensor(
            [pad_id if done[i] else listed[i] for i in range(b)], device=device
        ).unsqueeze(1)
        live = torch.tensor([not d for d in done], device=device).unsqueeze(1)
        if recompute:
            history = torch.cat([history, feed], dim=1)
            real = torch.cat([real, live], dim=1)
            cache = step.new_cache(b, slots_total)
            n = history.shape[1]
            logits = step(cache, history, torch.arange(n, device=device), real)[:, -1]
        else:
            slot = torch.tensor([width + t], device=device)
            logits = step(cache, feed, slot, live)[:, -1]
    return [Generated(o, f) for o, f in zip(out, finished, strict=True)]


def generate(
    model: CausalLM,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    params: SamplingParams = GREEDY,
    eos_id: int | None = None,
    seed: int | None = None,
    batch_size: int = 1,
    stop_check: StopCheck | None = None,
    recompute: bool = False,
    pad_id: int = 0,
    compile: bool | str = False,
    limits: Sequence[int] | None = None,
) -> list[Generated]:
    """`generate_batch` over `prompts` in batches of `batch_size`, in order.

    Sampling draws from one generator seeded with `seed`, so the same call gives the same
    tokens. `stop_check` receives the prompt's index in `prompts`.
    """
    device = model.head_weight().device
    generator = None
    if not params.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else 0)
    step = _Step(model, compile)
    results: list[Generated] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        check = None
        if stop_check is not None:

            def check(i: int, toks: list[int], base: int = start) -> bool:
                return stop_check(base + i, toks)

        results += generate_batch(
            model,
            chunk,
            max_new_tokens=max_new_tokens,
            params=params,
            eos_id=eos_id,
            generator=generator,
            stop_check=check,
            recompute=recompute,
            pad_id=pad_id,
            step=step,
            limits=None if limits is None else limits[start : start + batch_size],
        )
    return results
