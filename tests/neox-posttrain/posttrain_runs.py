"""Tiny post-training data sets and GPT-NeoX-style configs for end-to-end runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from neox_data.indexed_dataset import write_dataset

EOS = 95
LOSS = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.* lm_loss: ([0-9.E+-]+) \|")

BASE = {
    "vocab_size": 96,
    "num-workers": 0,
    "num-layers": 2,
    "hidden-size": 32,
    "num-attention-heads": 4,
    "seq-length": 24,
    "max-position-embeddings": 24,
    "pos-emb": "rotary",
    "rotary-pct": 0.5,
    "no-weight-tying": True,
    "gpt-j-residual": True,
    "optimizer": {"type": "Adam", "params": {"lr": 0.003, "betas": [0.9, 0.95], "eps": 1.0e-8}},
    "min_lr": 0.0003,
    "lr-decay-style": "cosine",
    "warmup": 0.1,
    "weight-decay": 0.0,
    "gradient_clipping": 1.0,
    "train_micro_batch_size_per_gpu": 2,
    "gradient_accumulation_steps": 2,
    "train-iters": 4,
    "seed": 5,
    "eval-interval": 2,
    "eval-iters": 1,
    "log-interval": 1,
    "checkpoint-factor": 2,
    "pack_impl": "unpacked",
}


def _progression(rng: np.random.Generator, n: int) -> list[int]:
    start, step = int(rng.integers(0, 90)), int(rng.integers(1, 4))
    return [int(x) for x in (start + step * np.arange(n)) % 90]


def write_pairs(folder: Path, n_docs: int = 24, seed: int = 0) -> dict[str, str]:
    """Prompt = the start of a progression; chosen continues it, rejected breaks it."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("pos", "pos_label", "neg", "neg_label")}
    for _ in range(n_docs):
        seq = _progression(rng, int(rng.integers(6, 14)))
        cut = int(rng.integers(3, len(seq) - 2))
        prompt, good = seq[:cut], seq[cut:]
        bad = [int(x) for x in rng.integers(0, 90, size=len(good) + int(rng.integers(0, 3)))]
        for side, answer in (("pos", good), ("neg", bad)):
            out[side].append(np.array(prompt + answer + [EOS], dtype=np.int32))
            out[f"{side}_label"].append(
                np.array([-100] * len(prompt) + answer + [EOS], dtype=np.int32)
            )
    paths = {}
    for key, docs in out.items():
        prefix = folder / f"pairs_{key}_document"
        write_dataset(prefix, docs, np.int32)
        paths[key] = str(prefix)
    return paths


def write_kto(folder: Path, n_docs: int = 24, seed: int = 1) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"text": [], "label": [], "reward": []}
    for i in range(n_docs):
        seq = _progression(rng, int(rng.integers(6, 14)))
        cut = int(rng.integers(3, len(seq) - 2))
        good = i % 2 == 0
        answer = seq[cut:] if good else [int(x) for x in rng.integers(0, 90, len(seq) - cut)]
        tokens = seq[:cut] + answer + [EOS]
        out["text"].append(np.array(tokens, dtype=np.int32))
        out["label"].append(np.array([-100] * cut + answer + [EOS], dtype=np.int32))
        out["reward"].append(np.full(len(tokens), 1 if good else -1, dtype=np.int32))
    paths = {}
    for key, docs in out.items():
        prefix = folder / f"kto_{key}_document"
        write_dataset(prefix, docs, np.int32)
        paths[key] = str(prefix)
    return paths


def pairwise_config(folder: Path, impl: str, **extra) -> Path:
    p = write_pairs(folder)
    cfg = dict(BASE, train_impl=impl, dataset_impl="pairwise", save=str(folder / "ckpt"))
    for split in ("train", "valid", "test"):
        for side in ("pos", "neg"):
            cfg[f"{side}_{split}_data_paths"] = [p[side]]
            cfg[f"{side}_{split}_label_data_paths"] = [p[f"{side}_label"]]
    cfg.update(extra)
    path = folder / f"{impl}.yml"
    path.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return path


def kto_config(folder: Path, **extra) -> Path:
    p = write_kto(folder)
    cfg = dict(BASE, train_impl="kto", save=str(folder / "ckpt"))
    for split in ("train", "valid", "test"):
        cfg[f"{split}_data_paths"] = [p["text"]]
        cfg[f"{split}_label_data_paths" if split != "train" else "train_label_data_paths"] = [
            p["label"]
        ]
        cfg[f"{split}_reward_data_paths"] = [p["reward"]]
    cfg.update(extra)
    path = folder / "kto.yml"
    path.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return path


def losses_in(output: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in LOSS.finditer(output)}
