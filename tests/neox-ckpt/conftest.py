"""Tiny random HF models of every supported architecture, saved with `save_pretrained`.

Norm weights and all biases are perturbed away from their 1/0 initial values so that a
mixed-up or dropped tensor changes the logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 96  # divisible by 1, 2, 4
LAYERS = 3


def _configs() -> dict[str, object]:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    # grouped-query: 8 query heads sharing 4 kv heads, so TP 4 keeps whole kv heads per rank
    gqa = {**common, "num_attention_heads": 8, "num_key_value_heads": 4}
    return {
        # Pythia shape: parallel residual, partial rotary, untied head
        "pythia": transformers.GPTNeoXConfig(
            **common, intermediate_size=128, rotary_pct=0.25, use_parallel_residual=True
        ),
        # GPT-NeoX with a sequential residual, full rotary and tied embeddings
        "neox_seq_tied": transformers.GPTNeoXConfig(
            **common,
            intermediate_size=96,
            rotary_pct=1.0,
            use_parallel_residual=False,
            tie_word_embeddings=True,
        ),
        "llama": transformers.LlamaConfig(
            **common, intermediate_size=80, num_key_value_heads=4, rms_norm_eps=1e-6
        ),
        "llama_gqa": transformers.LlamaConfig(
            **gqa,
            intermediate_size=80,
            rope_theta=500000.0,
            tie_word_embeddings=True,
        ),
        "llama_gqa_bias": transformers.LlamaConfig(
            **gqa,
            intermediate_size=80,
            attention_bias=True,
            mlp_bias=True,
        ),
        "mistral": transformers.MistralConfig(
            **gqa, intermediate_size=80, sliding_window=None, head_dim=8
        ),
        # a window shorter than the test sequences (17), so its size changes the logits
        "mistral_window": transformers.MistralConfig(
            **gqa, intermediate_size=80, sliding_window=6, head_dim=8
        ),
        # GPT-NeoX's LLaMA-2 configs: MLP biases without attention biases
        "llama_mlp_bias": transformers.LlamaConfig(
            **gqa, intermediate_size=80, attention_bias=False, mlp_bias=True
        ),
        "neox_no_attention_bias": transformers.GPTNeoXConfig(
            **common, intermediate_size=128, rotary_pct=0.25, attention_bias=False
        ),
    }


ARCHS = sorted(_configs())


def make_hf_model(name: str) -> torch.nn.Module:
    config = _configs()[name]
    torch.manual_seed(ARCHS.index(name))
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> folder written by save_pretrained (built once per session)."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name in ARCHS:
        make_hf_model(name).save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="session")
def hf_logits(ids: torch.Tensor):
    """folder -> transformers' fp32 logits for `ids` (cached per folder)."""
    cache: dict[Path, torch.Tensor] = {}

    def get(folder: Path) -> torch.Tensor:
        if folder not in cache:
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            with torch.no_grad():
                cache[folder] = model.eval()(ids).logits
        return cache[folder]

    return get


@pytest.fixture(scope="session")
def neox_logits(ids: torch.Tensor):
    """A neox checkpoint (any TP/PP) -> neox-core's logits for `ids`, shards merged by neox-ckpt."""
    from neox_ckpt.neox_reader import NeoxCheckpoint
    from neox_core.config import config_from_dict
    from neox_core.models import build_model
    from neox_core.models.hf_names import load_by_name

    def get(path: Path) -> torch.Tensor:
        ck = NeoxCheckpoint(path)
        cfg = config_from_dict(ck.config()).model
        model = build_model(cfg, seed=None).eval()
        load_by_name(model, {n: ck.read_full(n) for n in ck.tensors})
        with torch.no_grad():
            return model(ids)

    return get


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    """Each supported HF architecture in turn."""
    return request.param
