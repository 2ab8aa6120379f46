"""Acceptance: the shipped GPT-NeoX-format configs dry-run to their published parameter counts.

The published counts are checked independently against transformers' own models of the same
shapes, built on the meta device (no weights allocated, nothing downloaded).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neox_core.cli import main
from neox_core.config import load_config
from neox_core.flops import parameter_count

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "examples" / "configs"
PYTHIA_SETUP = CONFIGS / "local_setup.yml"
LLAMA_SETUP = CONFIGS / "llama" / "setup.yml"

PUBLISHED = [
    ([CONFIGS / "pythia" / "160M.yml", PYTHIA_SETUP], 162_322_944),
    ([CONFIGS / "pythia" / "410M.yml", PYTHIA_SETUP], 405_334_016),
    ([CONFIGS / "pythia" / "1B.yml", PYTHIA_SETUP], 1_011_781_632),
    ([CONFIGS / "llama" / "7B.yml", LLAMA_SETUP], 6_738_415_616),
    # Llama-3.2-1B shape: grouped-query attention, tied embeddings; the model file comes last
    ([LLAMA_SETUP, CONFIGS / "llama" / "gqa-1B.yml"], 1_235_814_400),
]
IDS = ["pythia-160M", "pythia-410M", "pythia-1B", "llama-7B", "llama-gqa-1B"]


@pytest.mark.parametrize(("files", "published"), PUBLISHED, ids=IDS)
def test_dry_run_prints_the_published_parameter_count(files, published, capsys) -> None:
    assert main([str(f) for f in files] + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {published:,}\n" in out
    assert "FLOPs per token at seq_length" in out


def _hf_count(files: list[Path]) -> int:
    import torch
    import transformers

    from neox_core.models.hf_names import hf_architecture, hf_config_kwargs

    m = load_config(files).model
    arch = hf_architecture(m)
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    with torch.device("meta"):
        model = getattr(transformers, arch)(config_class(**hf_config_kwargs(m)))
    # count a tied head once, as the published numbers do
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("files", "published"), PUBLISHED, ids=IDS)
def test_published_counts_match_transformers_models_of_the_same_shape(files, published) -> None:
    assert _hf_count(files) == published
    assert parameter_count(load_config(files).model) == published
