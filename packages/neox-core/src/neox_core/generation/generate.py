"""Batched autoregressive generation: left-padded prompts, a KV cache, stop tokens and strings.

`generate` takes token lists and returns token lists; text, files and modes live in
`samples.py`. Rows of a batch stop independently (end-of-document token, a stop check, or
`max_new_tokens`); the batch stops when every row has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from neox_core.generation.sampling import SamplingParams
from neox_core.generation.step import DecodeStep
from neox_core.models.decoder import CausalLM

GREEDY = SamplingParams()
SYNC_EVERY = 16  # decode steps between reads of the new tokens (stop checks) once running

# (row index in the batch, tokens generated so far) -> stop now
StopCheck = Callable[[int, list[int]], bool]


@dataclass
class Generated:
    tokens: list[int]  # new tokens, without the end-of-document token
    finished: bool  # ended by the end-of-document token or a stop check, not by the length cap


def _left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts right-aligned in one [B, W] tensor, and each row's padding length [B]."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
    pad = torch.tensor([width - len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), pad.to(device)


class _Rows:
    """Host-side view of the batch: each row's tokens so far and why it ended.

    Rows decode on the device without stopping; every so often the new tokens are read back
    and cut here at the end-of-document token, a stop check or the row's cap. A row keeps
    decoding after its end (nobody reads that), which changes nothing for the other rows.
    """

    def __init__(
        self,
        limits: Sequence[int],
        eos_id: int | None,
        stop_check: StopCheck | None,
    ) -> None:
        self.limits = limits
        self.eos_id = eos_id
        self.stop_check = stop_check
        self.out: list[list[int]] = [[] for _ in limits]
        self.done = [False] * len(limits)
        self.finished = [False] * len(limits)
        self.read = 0  # tokens per row read back so far

    def absorb(self, new: list[list[int]]) -> bool:
        """Take the next tokens of every row; True once every row has ended."""
        for i, row in enumerate(self.out):
            for tok in new[i]:
                if self.done[i]:
                    break
                if tok == self.eos_id:
                    self.done[i] = self.finished[i] = True
                    break
                row.append(tok)
                if self.stop_check is not None and self.stop_check(i, row):
                    self.done[i] = self.finished[i] = True
                elif len(row) >= self.limits[i]:
                    self.done[i] = True
        self.read += len(new[0]) if new else 0
        return all(self.done)


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
    step: DecodeStep | None = None,
    limits: Sequence[int] | None = None,
    fill_to: int | None = None,
) -> list[Generated]:
    """Continue every prompt (a non-empty token list) by up to `max_new_tokens` tokens.

    `limits` caps rows separately (e.g. to stay within the model's context); a row that
    reaches its cap is not `finished`. `fill_to` decodes that many rows (idle extra rows),
    so a compiled `step` sees one batch size.

    Tokens are read back to the host (for end-of-document and stop checks) after 1, 2, 4, 8
    and 16 tokens and then every `SYNC_EVERY`; the decode steps in between run on the device
    without waiting, and rows that ended meanwhile simply drop their extra tokens.

    With `recompute` (GPT-NeoX's switch) nothing is cached between steps: every step runs the
    whole sequence again, which gives the same tokens more slowly.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (use the eod token for none)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} must be at least 1")
    step = step or DecodeStep(model)
    rows = list(prompts) + [[pad_id]] * max(0, (fill_to or 0) - len(prompts))
    ids, pad = _left_pad(rows, pad_id, step.device)
    b, width = ids.shape
    caps = [min(max_new_tokens, c) for c in (limits or [max_new_tokens] * len(prompts))]
    host = _Rows(caps, eos_id, stop_check)

    cache = step.cache(b, width + max_new_tokens)
    step.prefill(cache, ids, pad, params, generator)
    produced, check_at = 1, 1
    while True:
        if produced == check_at:
            new = cache.tokens[: len(prompts), width + host.read : width + produced].tolist()
            if host.absorb(new) or produced == max_new_tokens:
                break
            check_at = min(max_new_tokens, produced + min(produced, SYNC_EVERY))
        if recompute:
            step.rerun(cache, width + produced, params, generator)
        else:
            step(cache, params, generator)
        produced += 1
    return [Generated(o, f) for o, f in zip(host.out, host.finished, strict=True)]


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
    compile: bool | str | None = False,
    limits: Sequence[int] | None = None,
    step: DecodeStep | None = None,
) -> list[Generated]:
    """`generate_batch` over `prompts` in batches of `batch_size`, in order.

    Sampling draws from one generator seeded with `seed`, so the same call gives the same
    tokens. `stop_check` receives the prompt's index in `prompts`. `compile` compiles the
    decode step (see `step.compile_mode`; None = on for CUDA, off elsewhere); compiled, a
    short last batch is filled up to `batch_size` so every batch replays the same graph.
    Pass a `step` (instead of `compile`) to keep its caches and graphs across calls.
    """
    device = model.head_weight().device
    generator = None
    if not params.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else 0)
    # recompute runs the whole (growing) sequence every step: eager, nothing to capture
    if step is None or recompute:
        step = DecodeStep(model, False if recompute else compile)
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
            fill_to=batch_size if step.compiled else None,
        )
    return results
