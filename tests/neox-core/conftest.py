"""Tiny checkpoints for generation and evaluation tests, built without any download.

Each is a random transformers model (GPT-NeoX/Pythia shape, LLaMA with grouped-query
attention) converted to a neox checkpoint at tensor-parallel size 2 with `neox-ckpt
hf-to-neox`, then exported back with `neox-ckpt neox-to-hf`: neox reads the TP-2 checkpoint
(merging it on load), transformers and lm-eval's `hf` backend read the export. The tokenizer is
the tiny example's, so text round-trips through real BPE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples" / "tiny" / "tokenizer.json"
VOCAB = 640  # the tokenizer's 633 tokens, padded


@dataclass(frozen=True)
class InferenceCheckpoint:
    name: str
    neox_dir: Path  # neox save directory (TP 2)
    configs: tuple[str, str]  # neox.yml written by hf-to-neox, then the tokenizer keys
    hf_dir: Path  # the neox-to-hf export, with tokenizer


def _hf_model(name: str):
    import torch
    import transformers

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        max_position_embeddings=128,
        initializer_range=0.1,  # peaked distributions: greedy choices are not near-ties
    )
    if name == "pythia":
        config = transformers.GPTNeoXConfig(
            **common,
            num_attention_heads=4,
            intermediate_size=128,
            rotary_pct=0.25,
            use_parallel_residual=True,
        )
    else:
        config = transformers.LlamaConfig(
            **common, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96
        )
    torch.manual_seed(11 if name == "pythia" else 12)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _tokenizer_folder(root: Path) -> Path:
    folder = root / "tokenizer"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|padding|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="session")
def inference_checkpoints(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, InferenceCheckpoint]:
    pytest.importorskip("transformers")
    from neox_ckpt.cli import main as ckpt

    root = tmp_path_factory.mktemp("inference")
    tok = _tokenizer_folder(root)
    tok_yml = root / "tokenizer.yml"
    tok_yml.write_text(json.dumps({"tokenizer-type": "HFTokenizer", "vocab-file": str(TOKENIZER)}))
    out = {}
    for name in ("pythia", "llama"):
        hf_src, neox, export = root / f"hf_{name}", root / f"neox_{name}", root / f"export_{name}"
        _hf_model(name).save_pretrained(hf_src)
        assert (
            ckpt(["hf-to-neox", "--hf-model", str(hf_src), "--output-dir", str(neox), "--tp", "2"])
            == 0
        )
        assert (
            ckpt(
                [
                    "neox-to-hf",
                    "--input-dir",
                    str(neox),
                    "--output-dir",
                    str(export),
                    "--tokenizer",
                    str(tok),
                ]
            )
            == 0
        )
        out[name] = InferenceCheckpoint(name, neox, (str(neox / "neox.yml"), str(tok_yml)), export)
    return out
