"""Samples of seq_length + 1 tokens read through the index maps, as GPT-NeoX's GPT2Dataset."""

from __future__ import annotations

import numpy as np
import torch

from neox_data.indexed_dataset import MMapIndexedDataset
from neox_kernels.index import IndexMaps


class GPTDataset(torch.utils.data.Dataset):
    """Sample j: documents doc_idx[p..q] between sample_idx rows shuffle_idx[j] and +1.

    Returns `{"text": int64[seq_length+1]}` plus `"label"` when a label dataset is given.
    Short samples are padded: text with -100 without labels (so the loss skips them), text
    with 0 and labels with -100 with labels; long ones are cut.
    """

    def __init__(
        self,
        name: str,
        tokens: MMapIndexedDataset,
        maps: IndexMaps,
        seq_length: int,
        labels: MMapIndexedDataset | None = None,
    ) -> None:
        self.name = name
        self.tokens = tokens
        self.labels = labels
        self.maps = maps
        self.seq_length = seq_length
        if labels is not None and len(labels) != len(tokens):
            raise ValueError(
                f"{name}: label dataset {labels.prefix} has {len(labels)} items, token dataset "
                f"{tokens.prefix} has {len(tokens)}"
            )

    def __len__(self) -> int:
        return len(self.maps)

    def __getstate__(self) -> dict[str, object]:
        """Pickle (for spawned loader workers) the cache file names, not the mapped arrays."""
        state = dict(self.__dict__)
        paths = {
            k: getattr(a, "filename", None)
            for k, a in (
                ("doc", self.maps.doc_idx),
                ("sample", self.maps.sample_idx),
                ("shuffle", self.maps.shuffle_idx),
            )
        }
        if all(paths.values()):
            state["maps"] = (self.maps.pack_impl, paths)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        maps = state["maps"]
        if isinstance(maps, tuple):
            from neox_core.data.index_cache import load_index

            state["maps"] = load_index(*maps)
        self.__dict__.update(state)

    def _read(self, source: MMapIndexedDataset, k: int) -> np.ndarray:
        doc_idx, sample_idx = self.maps.doc_idx, self.maps.sample_idx
        p, o = int(sample_idx[k][0]), int(sample_idx[k][1])
        q, e = int(sample_idx[k + 1][0]), int(sample_idx[k + 1][1])
        if p == q:
            return source.get(int(doc_idx[p]), offset=o, length=e - o + 1)
        parts = [source.get(int(doc_idx[p]), offset=o)]
        parts += [source.get(int(doc_idx[i])) for i in range(p + 1, q)]
        if q < len(doc_idx):  # the last row of pack_until_overflow points past the end
            parts.append(source.get(int(doc_idx[q]), length=e + 1))
        return np.concatenate(parts)

    def __getitem__(self, j: int) -> dict[str, np.ndarray]:
        if j < 0:
            raise IndexError(f"{self.name}: negative sample index {j}")
        if j >= self.maps.shuffle_idx.shape[0]:  # GPT-NeoX wraps an overrun around
            j %= len(self)
        k = int(self.maps.shuffle_idx[j])
        n = self.seq_length + 1
        text = self._read(self.tokens, k).astype(np.int64)[:n]
        if self.labels is None:
            if len(text) < n:
                text = np.pad(text, (0, n - len(text)), constant_values=-100)
            return {"text": text}
        label = self._read(self.labels, k).astype(np.int64)[:n]
        if len(text) < n:
            text = np.pad(text, (0, n - len(text)), constant_values=0)
            label = np.pad(label, (0, n - len(label)), constant_values=-100)
        return {"text": text, "label": label}


class BlendedDataset(torch.utils.data.Dataset):
    """Several datasets interleaved by weight (GPT-NeoX's BlendableDataset)."""

    def __init__(self, datasets: list[GPTDataset], weights: list[float]) -> None:
        from neox_kernels.index import build_blending_indices

        if len(datasets) != len(weights):
            raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
        self.datasets = datasets
        self.size = sum(len(d) for d in datasets)
        blend = build_blending_indices(weights, self.size)
        self.dataset_index = blend.dataset_index
        self.dataset_sample_index = blend.dataset_sample_index

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.datasets[int(self.dataset_index[i])][int(self.dataset_sample_index[i])]
