"""The decode step compiles once (one whole graph, no recompiles token after token or batch
after batch) and gives the eager step's tokens, greedy and sampled.

torch.compile's "aot_eager" backend runs Dynamo (graphs, guards, recompiles) and AOTAutograd
(the in-place cache writes) exactly as inductor would receive them, without generating code,
which keeps the test to seconds on CPU. `fullgraph=True` in the step makes any graph break,
such as a host read-back (`.item()`, `.tolist()`), an error.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from neox_core.config.schema import ModelConfig
from neox_core.generation.generate import generate_batch
from neox_core.generation.sampling import SamplingParams
from neox_core.generation.step import DecodeStep
from neox_core.models import build_model


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(
        architecture="llama", num_layers=2, hidden_size=32, num_attention_heads=4,
        num_kv_heads=2, intermediate_size=48, norm="rmsnorm", norm_bias=False,
        activation="swiglu", attention_bias=False, mlp_bias=False, tie_embeddings=False,
        padded_vocab_size=64,
    )  # fmt: skip
    return build_model(cfg, seed=0, dtype="fp32").eval()


def _prompts(seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 64, (n,), generator=g).tolist() for n in (5, 1, 9)]


def _tokens(model, prompts, step, **kw) -> list[list[int]]:
    return [g.tokens for g in generate_batch(model, prompts, step=step, **kw)]


@pytest.mark.slow
def test_compiled_step_never_recompiles_and_matches_eager(model) -> None:
    torch._dynamo.reset()
    counters.clear()
    eager = DecodeStep(model, compile=False)
    compiled = DecodeStep(model, compile="reduce-overhead", backend="aot_eager")
    first = _tokens(model, _prompts(0), compiled, max_new_tokens=20)
    assert counters["stats"]["unique_graphs"] == 1
    assert first == _tokens(model, _prompts(0), eager, max_new_tokens=20)

    # other prompts, other lengths, same batch size: the same graph replays
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = _tokens(model, _prompts(1), compiled, max_new_tokens=20)
        shorter = _tokens(model, _prompts(0), compiled, max_new_tokens=7)
    assert counters["stats"]["unique_graphs"] == 1
    assert again == _tokens(model, _prompts(1), eager, max_new_tokens=20)
    assert shorter == [t[:7] for t in first]

    # sampling is one more graph (its noise comes in as a tensor), then replays too
    params = SamplingParams(temperature=0.8, top_k=20, top_p=0.9)

    def sampled(step, seed: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return _tokens(
            model, _prompts(0), step, max_new_tokens=20, params=params, generator=generator
        )

    drawn = sampled(compiled, 3)
    assert counters["stats"]["unique_graphs"] == 2
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert sampled(compiled, 3) == drawn
        assert sampled(compiled, 4) != drawn
    assert drawn == sampled(eager, 3)
    assert counters["stats"]["unique_graphs"] == 2


@pytest.mark.gpu
def test_cuda_graph_step_replays_without_recompiles_or_skips(model) -> None:
    """On CUDA: inductor + CUDA graphs (no skipped graph), same greedy tokens as eager."""
    torch._dynamo.reset()
    counters.clear()
    cuda = copy.deepcopy(model).to("cuda")
    eager = DecodeStep(cuda, compile=False)
    compiled = DecodeStep(cuda, compile=None)  # the default on CUDA: reduce-overhead
    assert compiled.cuda_graphs
    expected = _tokens(cuda, _prompts(0), eager, max_new_tokens=20)
    assert _tokens(cuda, _prompts(0), compiled, max_new_tokens=20) == expected
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = _tokens(cuda, _prompts(1), compiled, max_new_tokens=20)
    assert again == _tokens(cuda, _prompts(1), eager, max_new_tokens=20)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])
