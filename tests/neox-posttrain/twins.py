"""Tiny twin models (neox and HF, same weights) and TRL trainers around the HF twin.

TRL is the reference: its trainers' own `compute_loss` runs on the HF model, ours on the
neox model, on identical token batches. The TRL trainers are built with a throw-away text
dataset (TRL insists on one) and then fed our batches through their own collators.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from neox_core.config import NeoxConfig
from neox_core.config.schema import ModelConfig, PostTrainConfig
from neox_core.models import build_model
from neox_core.models.hf_names import hf_architecture, hf_config_kwargs, load_hf_state_dict

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "examples" / "tiny" / "tokenizer.json"

MODEL = ModelConfig(
    architecture="gpt_neox",
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=100,
    padded_vocab_size=128,
    max_position_embeddings=64,
    rotary_pct=0.5,
    gpt_j_residual=True,
    tie_embeddings=False,
)


def hf_twin(seed: int, cls_name: str | None = None):
    """(HF model, neox model) with the same random weights (norms/biases perturbed)."""
    arch = cls_name or hf_architecture(MODEL)
    config = transformers.GPTNeoXConfig(**hf_config_kwargs(MODEL), attn_implementation="eager")
    if cls_name is not None:
        config.num_labels = 1
    torch.manual_seed(seed)
    hf = getattr(transformers, arch)(config)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = build_model(MODEL, seed=None)
    if cls_name is None:
        load_hf_state_dict(ours, hf.state_dict())
    return hf, ours


def tokenizer():
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER), eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def config(**posttrain) -> NeoxConfig:
    cfg = NeoxConfig(model=MODEL, posttrain=PostTrainConfig(**posttrain))
    cfg.data.seq_length = 24
    return cfg


def trl_dpo(model, ref, beta: float):
    from datasets import Dataset

    ds = Dataset.from_list([{"prompt": "the harbour", "chosen": " calm", "rejected": " rain"}] * 2)
    args = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(), report_to=[], beta=beta, use_cpu=True, bf16=False
    )
    return trl.DPOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tokenizer()
    )


def trl_kto(model, ref, beta: float, wd: float, wu: float):
    from datasets import Dataset

    ds = Dataset.from_list(
        [{"prompt": "the harbour", "completion": " calm", "label": i % 2 == 0} for i in range(4)]
    )
    args = trl.KTOConfig(
        output_dir=tempfile.mkdtemp(),
        report_to=[],
        beta=beta,
        desirable_weight=wd,
        undesirable_weight=wu,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
    )
    return trl.KTOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tokenizer()
    )


def trl_reward(model):
    from datasets import Dataset

    ds = Dataset.from_list([{"chosen": "the harbour is calm", "rejected": "rain"}] * 2)
    args = trl.RewardConfig(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True, bf16=False)
    return trl.RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer())


def forward(model, tokens):
    return model(tokens)
