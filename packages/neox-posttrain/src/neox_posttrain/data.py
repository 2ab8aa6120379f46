"""Post-training datasets: one document per sample, several aligned `.bin/.idx` sources.

DPO and reward models read pairs (`dataset_impl: pairwise`): sample keys `pos`, `neg`, and
with label datasets `pos_label`, `neg_label`; with precomputed reference log-probabilities
(`precompute_model_name`) `pos_ref`, `neg_ref`. KTO reads `text`, `label`, `reward` (+1 on
every token of a desirable example, -1 on an undesirable one) and optionally `ref`.

Each sample is a whole document (GPT-NeoX's post-training configs use `pack_impl: unpacked`),
cut to seq_length + 1 or padded (tokens -100 without labels, else 0; labels -100; rewards
and reference log-probs 0). The document order is GPT-NeoX's unpacked index map of the first
source (shuffled per epoch with the seed, cached next to the data); `allow_chopped: false`
leaves out documents longer than seq_length + 1 in any source, and documents with nothing
to train on are left out either way. Splits are blended by weight as in pre-training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neox_core.config import NeoxConfig
from neox_core.data import Datasets, load_or_build_index, num_samples_per_split
from neox_core.data.gpt_dataset import BlendedDataset
from neox_data.indexed_dataset import MMapIndexedDataset, dataset_exists
from neox_kernels.index import normalized_weights_and_num_samples

PAD = {"label": -100, "ref": 0.0, "reward": 0}


@dataclass(frozen=True)
class Source:
    key: str  # sample key: "pos", "neg_label", "reward", ...
    prefix: str
    config_key: str  # the YAML key that named it, for errors


def _open(src: Source) -> MMapIndexedDataset:
    if not dataset_exists(src.prefix):
        raise FileNotFoundError(
            f"{src.config_key}: no dataset {src.prefix}.bin/.idx (paths are relative to CWD)"
        )
    return MMapIndexedDataset(src.prefix)


def _kind(key: str) -> str:
    """ "tokens", "label", "reward" or "ref" for a sample key."""
    last = key.rsplit("_", 1)[-1]
    return last if last in ("label", "reward", "ref") else "tokens"


def _token_key(key: str) -> str:
    """The token source a label/reward/ref source is aligned with ("pos_label" -> "pos")."""
    return "text" if key in ("label", "reward", "ref") else key.split("_")[0]


class DocumentDataset(torch.utils.data.Dataset):
    """Sample j = document doc_idx[sample_idx[shuffle_idx[j]][0]] of every source."""

    def __init__(self, name: str, sources: list[Source], maps: Any, seq_length: int) -> None:
        self.name = name
        self.sources = sources
        self.data = {s.key: _open(s) for s in sources}
        self.maps = maps
        self.seq_length = seq_length
        self.has_labels = any(_kind(s.key) == "label" for s in sources)

    def __len__(self) -> int:
        return len(self.maps)

    def document(self, j: int) -> int:
        if j >= self.maps.shuffle_idx.shape[0]:
            j %= len(self)
        k = int(self.maps.shuffle_idx[j])
        return int(self.maps.doc_idx[int(self.maps.sample_idx[k][0])])

    def __getitem__(self, j: int) -> dict[str, np.ndarray]:
        d = self.document(j)
        n = self.seq_length + 1
        out = {}
        for key, data in self.data.items():
            kind = _kind(key)
            dtype = np.float32 if kind == "ref" else np.int64
            values = np.asarray(data.get(d), dtype=dtype)[:n]
            pad = PAD.get(kind, 0 if self.has_labels else -100)
            out[key] = np.pad(values, (0, n - len(values)), constant_values=pad)
        return out


def _skip(
    data: dict[str, MMapIndexedDataset], docs: np.ndarray, span: int, allow_chopped: bool
) -> Callable[[], np.ndarray]:
    def compute() -> np.ndarray:
        n_docs = len(next(iter(data.values())))
        skip = np.zeros(n_docs, dtype=np.bool_)
        labels = [v for k, v in data.items() if _kind(k) == "label"]
        for d in docs:
            d = int(d)
            if not allow_chopped and any(int(v.sizes[d]) > span for v in data.values()):
                skip[d] = True
            elif labels and any(np.all(v.get(d)[1:span] == -100) for v in labels):
                skip[d] = True  # no trained target inside the sample
        return skip

    return compute


def document_dataset(
    name: str, sources: list[Source], num_samples: int, cfg: NeoxConfig, seed: int, **build: Any
) -> DocumentDataset:
    """One split's dataset of aligned sources; checks the sources hold the same documents."""
    data = {s.key: _open(s) for s in sources}
    first = sources[0]
    sizes = data[first.key].sizes
    for s in sources[1:]:
        other = data[s.key]
        if len(other) != len(sizes):
            raise ValueError(
                f"{s.config_key}: {s.prefix} has {len(other)} documents, {first.prefix} "
                f"({first.config_key}) has {len(sizes)}"
            )
        if _kind(s.key) != "tokens" and not np.array_equal(
            other.sizes, data[_token_key(s.key)].sizes
        ):
            raise ValueError(
                f"{s.config_key}: {s.prefix} is not aligned token for token with "
                f"{data[_token_key(s.key)].prefix}"
            )
    docs = np.arange(len(sizes), dtype=np.int32)
    span = cfg.data.seq_length + 1
    maps = load_or_build_index(
        data_prefix=first.prefix,
        name=name,
        documents=docs,
        sizes=np.require(sizes, dtype=np.int32, requirements=["C", "A"]),
        num_samples=num_samples,
        seq_length=cfg.data.seq_length,
        seed=seed,
        pack_impl="unpacked",
        allow_chopped=cfg.data.allow_chopped,
        skip=_skip(data, docs, span, cfg.data.allow_chopped),
        **build,
    )
    return DocumentDataset(name, sources, maps, cfg.data.seq_length)


def _ref_source(key: str, prefix: str, cfg: NeoxConfig, config_key: str) -> Source:
    name = cfg.posttrain.precompute_model_name
    return Source(f"{key}_ref" if key else "ref", f"{prefix}_{name}", f"{config_key} + _{name}")


def split_sources(cfg: NeoxConfig, split: str) -> list[list[Source]]:
    """The aligned sources of each dataset of a split (empty when the split has none)."""
    pt, d = cfg.posttrain, cfg.data
    out: list[list[Source]] = []
    if pt.dataset_impl == "pairwise":
        pos = getattr(pt, f"pos_{split}_data_paths") or []
        neg = getattr(pt, f"neg_{split}_data_paths") or []
        pos_l = getattr(pt, f"pos_{split}_label_data_paths") or []
        neg_l = getattr(pt, f"neg_{split}_label_data_paths") or []
        for i, (p, n) in enumerate(zip(pos, neg, strict=True)):
            group = [
                Source("pos", p, f"pos_{split}_data_paths"),
                Source("neg", n, f"neg_{split}_data_paths"),
            ]
            if pos_l:
                group.append(Source("pos_label", pos_l[i], f"pos_{split}_label_data_paths"))
                group.append(Source("neg_label", neg_l[i], f"neg_{split}_label_data_paths"))
            if pt.precompute_model_name:
                group.append(_ref_source("pos", p, cfg, f"pos_{split}_data_paths"))
                group.append(_ref_source("neg", n, cfg, f"neg_{split}_data_paths"))
            out.append(group)
        return out
    paths = getattr(d, f"{split}_data_paths") or []
    labels = d.label_data_paths if split == "train" else getattr(d, f"{split}_label_data_paths")
    rewards = getattr(pt, f"{split}_reward_data_paths") or []
    for i, p in enumerate(paths):
        group = [Source("text", p, f"{split}_data_paths")]
        if labels:
            group.append(Source("label", labels[i], f"{split}_label_data_paths"))
        if rewards:
            group.append(Source("reward", rewards[i], f"{split}_reward_data_paths"))
        if pt.precompute_model_name:
            group.append(_ref_source("", p, cfg, f"{split}_data_paths"))
        out.append(group)
    return out


def build_posttrain_datasets(
    cfg: NeoxConfig,
    *,
    train_iters: int,
    eval_interval: int,
    eval_iters: int,
    train_batch_size: int,
    seed: int,
    build: bool = True,
    barrier: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> Datasets:
    """train/valid/test for a post-training run, blended by `<split>_data_weights`."""
    counts = num_samples_per_split(train_iters, eval_interval, eval_iters, train_batch_size)
    out: dict[str, BlendedDataset | None] = {}
    for split, total in zip(("train", "valid", "test"), counts, strict=True):
        groups = split_sources(cfg, split)
        if not groups or total == 0:
            out[split] = None
            continue
        given = getattr(cfg.data, f"{split}_data_weights") or [1.0] * len(groups)
        if len(given) != len(groups):
            raise ValueError(f"{split}_data_weights: {len(given)} weights for {len(groups)} paths")
        weights, per_dataset = normalized_weights_and_num_samples(given, total)
        datasets = [
            document_dataset(
                f"{split}_{i}_{cfg.posttrain.train_impl}",
                group,
                n,
                cfg,
                seed,
                build=build,
                barrier=barrier,
                log=log,
            )
            for i, (group, n) in enumerate(zip(groups, per_dataset, strict=True))
        ]
        out[split] = BlendedDataset(datasets, weights)  # type: ignore[arg-type]
    return Datasets(out["train"], out["valid"], out["test"])
