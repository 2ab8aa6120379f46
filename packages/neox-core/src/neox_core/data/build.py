"""Build the train/valid/test datasets of a run from the data config, as GPT-NeoX does.

Either `train_data_paths` (+ valid/test paths, `*_data_weights`, `label_data_paths` for the
train sets), each set blended by weight and built with ceil(w·N·1.005) samples per dataset;
or one `data_path` cut into train/valid/test by `split`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import zip_longest

import numpy as np

from neox_core.config import DataConfig
from neox_core.data.checks import check_data_paths
from neox_core.data.gpt_dataset import BlendedDataset, GPTDataset
from neox_core.data.index_cache import load_or_build_index
from neox_core.data.splits import num_samples_per_split, split_boundaries
from neox_data.indexed_dataset import MMapIndexedDataset, dataset_exists
from neox_kernels.index import normalized_weights_and_num_samples, weights_by_num_docs


@dataclass
class Datasets:
    train: BlendedDataset | GPTDataset | None
    valid: BlendedDataset | GPTDataset | None
    test: BlendedDataset | GPTDataset | None


def _open(prefix: str, key: str) -> MMapIndexedDataset:
    if not dataset_exists(prefix):
        raise FileNotFoundError(f"{key}: no dataset {prefix}.bin/.idx (paths are relative to CWD)")
    return MMapIndexedDataset(prefix)


def _label_skip(
    labels: MMapIndexedDataset | None, documents: np.ndarray, n_docs: int, span: int
) -> Callable[[], np.ndarray | None]:
    """Documents whose first `span` labels are all -100 (nothing to learn) are left out."""

    def compute() -> np.ndarray | None:
        if labels is None:
            return None
        skip = np.zeros(n_docs, dtype=np.bool_)
        for d in documents:
            skip[d] = bool(np.all(labels.get(int(d))[:span] == -100))
        return skip

    return compute


class _Builder:
    def __init__(
        self,
        cfg: DataConfig,
        seed: int,
        build: bool,
        barrier: Callable[[], None] | None,
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.seed, self.build, self.barrier, self.log = cfg, seed, build, barrier, log

    def dataset(
        self,
        name: str,
        prefix: str,
        num_samples: int,
        key: str,
        documents: np.ndarray | None = None,
        label_prefix: str | None = None,
        tokens: MMapIndexedDataset | None = None,
    ) -> GPTDataset:
        cfg = self.cfg
        tokens = tokens or _open(prefix, key)
        labels = _open(label_prefix, f"{name} label_data_paths") if label_prefix else None
        docs = documents if documents is not None else np.arange(len(tokens), dtype=np.int32)
        span = cfg.seq_length + 1 if cfg.pack_impl == "pack_until_overflow" else cfg.seq_length
        maps = load_or_build_index(
            data_prefix=prefix,
            name=name,
            documents=docs,
            # the .idx sizes start at byte 34 (unaligned); the kernels need an aligned array
            sizes=np.require(tokens.sizes, dtype=np.int32, requirements=["C", "A"]),
            num_samples=num_samples,
            seq_length=cfg.seq_length,
            seed=self.seed,
            pack_impl=cfg.pack_impl,
            allow_chopped=cfg.allow_chopped,
            skip=_label_skip(labels, docs, len(tokens), span),
            build=self.build,
            barrier=self.barrier,
            log=self.log,
        )
        return GPTDataset(name, tokens, maps, cfg.seq_length, labels)


def build_datasets(
    cfg: DataConfig,
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
    """Datasets of the run; `build` on the rank that writes missing index caches.

    Every data path is checked first (`checks.py`): DataCheckError names a damaged one.
    """
    check_data_paths(cfg)
    counts = num_samples_per_split(train_iters, eval_interval, eval_iters, train_batch_size)
    b = _Builder(cfg, seed, build, barrier, log)
    if cfg.train_data_paths:
        return _weighted(cfg, b, counts)
    if cfg.data_path:
        return _split(cfg, b, counts)
    raise ValueError("data: set train_data_paths (with weights) or data_path (with split)")


def _weights(given: Sequence[float] | None, n: int, key: str) -> list[float]:
    if given is None:
        return [1.0] * n
    if len(given) != n:
        raise ValueError(f"{key}: {len(given)} weights for {n} paths")
    return list(given)


def _weighted(cfg: DataConfig, b: _Builder, counts: tuple[int, int, int]) -> Datasets:
    sets = (
        ("train", cfg.train_data_paths or [], cfg.train_data_weights),
        ("valid", cfg.valid_data_paths or [], cfg.valid_data_weights),
        ("test", cfg.test_data_paths or [], cfg.test_data_weights),
    )
    out: dict[str, BlendedDataset | None] = {}
    for (split, paths, given), total in zip(sets, counts, strict=True):
        labels = _split_labels(cfg, split, len(paths))
        if not paths:
            out[split] = None
            continue
        weights = _weights(given, len(paths), f"{split}_data_weights")
        if cfg.weight_by_num_documents:
            docs = [len(_open(p, f"{split}_data_paths")) for p in paths]
            weights = weights_by_num_docs(docs, alpha=cfg.weighted_sampler_alpha)
        weights, per_dataset = normalized_weights_and_num_samples(weights, total)
        datasets = [
            b.dataset(
                f"{split}_{i}",
                path,
                n,
                f"{split}_data_paths",
                label_prefix=label,
            )
            for i, (path, n, label) in enumerate(zip_longest(paths, per_dataset, labels))
        ]
        out[split] = BlendedDataset(datasets, weights)
    return Datasets(out["train"], out["valid"], out["test"])


def _split_labels(cfg: DataConfig, split: str, n_paths: int) -> list[str]:
    """A split's label datasets: `label_data_paths` (train) or `<split>_label_data_paths`."""
    key = "label_data_paths" if split == "train" else f"{split}_label_data_paths"
    labels = list(getattr(cfg, key, None) or [])
    if labels and len(labels) != n_paths:
        raise ValueError(f"{key}: {len(labels)} paths for {n_paths} {split}_data_paths")
    return labels


def _split(cfg: DataConfig, b: _Builder, counts: tuple[int, int, int]) -> Datasets:
    assert cfg.data_path is not None
    tokens = _open(cfg.data_path, "data_path")
    bounds = split_boundaries(cfg.split, len(tokens))
    b.log(f" > dataset split of {cfg.data_path}: documents {bounds}")
    label = cfg.label_data_paths[0] if cfg.label_data_paths else None
    out: list[GPTDataset | None] = []
    for i, name in enumerate(("train", "valid", "test")):
        if bounds[i + 1] <= bounds[i]:
            out.append(None)
            continue
        docs = np.arange(bounds[i], bounds[i + 1], dtype=np.int32)
        out.append(
            b.dataset(name, cfg.data_path, counts[i], "data_path", docs, label, tokens=tokens)
        )
    return Datasets(*out)
