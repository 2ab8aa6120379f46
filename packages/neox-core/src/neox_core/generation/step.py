"""The decode step, all on the device, and the object that owns its cache and compilation.

A step feeds each row's newest token (the slot at `cache.cursor`), picks the next one on the
device, writes it into the next slot and advances the cursor. It reads nothing back to the
host and has the same shapes every token, so `torch.compile(mode="reduce-overhead")` captures
it once per (batch, cache size) as a CUDA graph and replays it for every later token. The
prompt (prefill) runs eagerly: once per batch, with a shape that changes from batch to batch.
"""

from __future__ import annotations

import torch

from neox_core.generation.kv_cache import KVCache, allocate_cache, forward_cached
from neox_core.generation.sampling import SamplingParams, draw_noise, pick
from neox_core.models.decoder import CausalLM

SLOT_MULTIPLE = 128  # cache sizes are rounded up to this, so nearby lengths share one graph


def decode_step(
    model: CausalLM, cache: KVCache, params: SamplingParams, noise: torch.Tensor | None
) -> None:
    """Feed the token at `cache.cursor`, write the next one after it, advance the cursor."""
    slot = cache.cursor
    logits = forward_cached(model, cache, cache.tokens.index_select(1, slot), slot)[:, -1]
    cache.tokens.index_copy_(1, slot + 1, pick(logits, params, noise).unsqueeze(1))
    slot.add_(1)


def compile_mode(compile: bool | str | None, device: torch.device) -> str | None:
    """The torch.compile mode for `compile` on `device`, or None for eager.

    None means automatic: CUDA graphs ("reduce-overhead") on CUDA, eager elsewhere (on CPU
    the compile time outweighs the gain for a few hundred tokens). True means
    "reduce-overhead" on CUDA and inductor's default elsewhere; a string is a mode name.
    """
    if compile is None:
        compile = device.type == "cuda"
    if compile is False:
        return None
    if compile is True:
        return "reduce-overhead" if device.type == "cuda" else "default"
    return compile


class DecodeStep:
    """Runs prefill and decode steps for one model, reusing a cache per batch size.

    Caches and sampling buffers are kept (and marked static for the compiled step) so later
    batches of the same size replay the same compiled graph instead of compiling again.
    """

    def __init__(
        self, model: CausalLM, compile: bool | str | None = False, backend: str = "inductor"
    ) -> None:
        """`backend` is torch.compile's ("aot_eager" traces the step without generating code)."""
        self.model = model
        self.device = model.head_weight().device
        self.mode = compile_mode(compile, self.device)
        self.cuda_graphs = self.mode is not None and "reduce-overhead" in self.mode
        self.fn = decode_step
        if self.mode is not None:
            from neox_core.distributed.compile import tag_compile_caches

            tag_compile_caches()
            # fullgraph: a graph break would split the step and defeat the CUDA graph
            self.fn = torch.compile(
                decode_step,
                mode=self.mode if backend == "inductor" else None,
                backend=backend,
                fullgraph=True,
                dynamic=False,
            )
        self._caches: dict[int, KVCache] = {}
        self._noise: dict[int, torch.Tensor] = {}

    @property
    def compiled(self) -> bool:
        return self.mode is not None

    def cache(self, batch: int, slots: int) -> KVCache:
        """A cache of `batch` rows and at least `slots` slots (the one kept, if big enough)."""
        cache = self._caches.get(batch)
        if cache is None or cache.size < slots:
            size = -(-slots // SLOT_MULTIPLE) * SLOT_MULTIPLE
            self._caches.pop(batch, None)  # free the smaller one before allocating
            cache = allocate_cache(self.model, batch, size)
            if self.compiled:
                for t in cache.tensors():
                    torch._dynamo.mark_static_address(t)
            self._caches[batch] = cache
        return cache

    def noise(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """Fresh Exp(1) draws [batch, vocab] for sampling, in a buffer kept per batch size."""
        buf = self._noise.get(batch)
        if buf is None:
            buf = torch.empty(batch, self.model.head_weight().shape[0], device=self.device)
            if self.compiled:
                torch._dynamo.mark_static_address(buf)
            self._noise[batch] = buf
        return draw_noise(buf, generator)

    def prefill(
        self,
        cache: KVCache,
        ids: torch.Tensor,
        pad: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None,
    ) -> None:
        """Run the left-padded prompts `ids` [B, W] (pad [B] slots each) and pick token W.

        Afterwards the cursor is at slot W, where the first new token sits.
        """
        width = ids.shape[1]
        cache.tokens[:, :width] = ids
        cache.pad.copy_(pad)
        self.rerun(cache, width, params, generator)

    def rerun(
        self,
        cache: KVCache,
        length: int,
        params: SamplingParams,
        generator: torch.Generator | None,
    ) -> None:
        """Run slots 0 .. length-1 from scratch and pick the token of slot `length`.

        Prefill, and every step of GPT-NeoX's `recompute` (no reuse of cached keys/values).
        """
        start = cache.slot_ids[:1]
        logits = forward_cached(self.model, cache, cache.tokens[:, :length], start)[:, -1]
        noise = None if params.greedy else self.noise(cache.batch, generator)
        cache.tokens[:, length] = pick(logits, params, noise)
        cache.cursor.fill_(length)

    def __call__(
        self, cache: KVCache, params: SamplingParams, generator: torch.Generator | None
    ) -> None:
        """One decode step (compiled if this object was built to compile)."""
        noise = None if params.greedy else self.noise(cache.batch, generator)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        self.fn(self.model, cache, params, noise)
