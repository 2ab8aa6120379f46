"""A neox model as an lm-evaluation-harness `LM`: log-likelihoods, rolling perplexity, generation.

Scoring follows the harness's own `hf` backend request for request (the same truncation, the
same rolling windows, the same greedy check), so a neox checkpoint and its `neox-ckpt
neox-to-hf` export get the same numbers. Requests are sorted longest first and batched, so
padding is small and the first batch shows at once whether memory suffices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import Collator
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from neox_core.generation.generate import generate
from neox_core.generation.samples import cut_at_stop
from neox_core.generation.sampling import SamplingParams

# ((context, continuation) or None, context tokens, continuation tokens)
TokenRequest = tuple[Any, list[int], list[int]]


class NeoxLM(TemplateLM):
    """`model` (a neox `CausalLM` in eval mode) with a neox-data tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        max_length: int,
        batch_size: int = 1,
        max_gen_toks: int = 256,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        if tokenizer.eod is None:
            raise ValueError("lm-eval needs an end-of-document token; the tokenizer has none")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_gen_toks = max_gen_toks
        self.seed = seed
        self._device = model.head_weight().device

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eod

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests: list[TokenRequest], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        def longest_first(req: TokenRequest) -> tuple[int, tuple[int, ...]]:
            toks = req[1] + req[2]
            return -len(toks), tuple(toks)

        ordered = Collator(requests, sort_fn=longest_first)
        pbar = tqdm(
            total=len(requests),
            disable=disable_tqdm or self.rank != 0,
            desc="Running loglikelihood requests",
        )
        out: list[tuple[float, bool]] = []
        for chunk in ordered.get_batched(n=self.batch_size):
            inputs = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in chunk]
            width = max(len(i) for i in inputs)
            batch = torch.zeros((len(inputs), width), dtype=torch.long)
            for row, ids in enumerate(inputs):
                batch[row, : len(ids)] = torch.tensor(ids)  # right-padded: causal, pads unseen
            logprobs = F.log_softmax(self.model(batch.to(self.device)).float(), dim=-1)
            for (_, _, cont), ids, lp in zip(chunk, inputs, logprobs, strict=True):
                n = len(cont)
                picked = lp[len(ids) - n : len(ids)]  # [n, V]
                target = torch.tensor(cont, device=picked.device)
                greedy = bool((picked.argmax(-1) == target).all())
                score = float(picked.gather(-1, target[:, None]).sum())
                out.append((score, greedy))
                pbar.update(1)
        pbar.close()
        return ordered.get_original(out)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows: list[TokenRequest] = []
        owners: list[int] = []
        for i, (text,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owners.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, (score, _) in zip(owners, scores, strict=True):
            totals[owner] += score
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        ordered = Collator(
            [req.args for req in requests],
            sort_fn=lambda args: (-len(self.tok_encode(args[0])), args[0]),
            group_by="gen_kwargs",
            group_fn=lambda args: args[1],
        )
        pbar = tqdm(
            total=len(requests),
            disable=disable_tqdm or self.rank != 0,
            desc="Running generate_until requests",
        )
        out: list[str] = []
        for chunk in ordered.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk, strict=True)
            kwargs = dict(all_kwargs[0])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            eot = self.tok_decode([self.eot_token_id])
            if eot not in until:
                until.append(eot)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            do_sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 0.0)) if do_sample else 0.0
            params = SamplingParams(
                temperature=temperature,
                top_k=int(kwargs.pop("top_k", 0) or 0),
                top_p=float(kwargs.pop("top_p", 0.0) or 0.0) if temperature else 0.0,
            )
            budget = self.max_length - max_new
            prompts = [self.tok_encode(c)[-budget:] if budget > 0 else [] for c in contexts]
            prompts = [p or [self.eot_token_id] for p in prompts]

            def stop_check(_: int, toks: list[int], stops: list[str] = until) -> bool:
                return cut_at_stop(self.tok_decode(toks), stops)[1]

            results = generate(
                self.model,
                prompts,
                max_new_tokens=max(1, max_new),
                params=params,
                eos_id=self.eot_token_id,
                seed=self.seed,
                batch_size=len(prompts),
                stop_check=stop_check,
                pad_id=self.eot_token_id,
            )
            for ctx, kw, res in zip(contexts, all_kwargs, results, strict=True):
                text = cut_at_stop(self.tok_decode(res.tokens), until)[0]
                out.append(text)
                self.cache_hook.add_partial("generate_until", (ctx, kw), text)
                pbar.update(1)
        pbar.close()
        return ordered.get_original(out)
