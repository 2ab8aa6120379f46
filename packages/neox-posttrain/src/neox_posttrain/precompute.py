"""Reference log-probabilities precomputed beside the data (GPT-NeoX's `precompute`).

For every token dataset a run reads (`train/valid/test_data_paths`, or the `pos_`/`neg_`
paths of pairwise data) this writes `<prefix>_<precompute_model_name>.bin/.idx`: float32,
one value per token of each document, value j = log p(token j+1 | tokens 0..j) under the
reference model (the checkpoint in `load`), 0 for the last token. The datasets then read it
through the same document windows as the tokens (`pos_ref`/`neg_ref`/`ref` sample keys), and
DPO/KTO use it instead of a frozen model in memory. A document is scored on its first
seq_length + 1 tokens, as training sees it (`pack_impl: unpacked`); the rest stays 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from neox_core.config import NeoxConfig
from neox_data.indexed_dataset import IndexedDatasetWriter, MMapIndexedDataset, dataset_exists


def token_prefixes(cfg: NeoxConfig) -> list[str]:
    """Every token dataset of the run, in config order, without repeats."""
    pt, d = cfg.posttrain, cfg.data
    found: list[str] = []
    for split in ("train", "valid", "test"):
        if pt.dataset_impl == "pairwise":
            groups = [getattr(pt, f"{s}_{split}_data_paths") for s in ("pos", "neg")]
        else:
            groups = [getattr(d, f"{split}_data_paths")]
        for paths in groups:
            for p in paths or []:
                if p not in found:
                    found.append(p)
    if d.data_path and d.data_path not in found:
        found.append(d.data_path)
    return found


@torch.no_grad()
def document_logps(
    model: torch.nn.Module, docs: list[np.ndarray], seq_length: int, device: torch.device
) -> list[np.ndarray]:
    """Per-token reference log-probs of each document (see the module docstring)."""
    n = seq_length + 1
    width = min(n, max(len(x) for x in docs))
    tokens = torch.zeros((len(docs), width), dtype=torch.long)
    for i, doc in enumerate(docs):
        cut = np.asarray(doc[:n], dtype=np.int64)
        tokens[i, : len(cut)] = torch.from_numpy(cut)
    tokens = tokens.to(device)
    logits = model(tokens[:, :-1]).float()
    logps = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    out = []
    for i, doc in enumerate(docs):
        values = np.zeros(len(doc), dtype=np.float32)
        k = min(len(doc), n) - 1
        values[:k] = logps[i, :k].cpu().numpy()
        out.append(values)
    return out


def precompute(
    cfg: NeoxConfig,
    model: torch.nn.Module,
    name: str,
    device: torch.device,
    batch_size: int = 8,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Write `<prefix>_<name>` for every token dataset of `cfg`; returns the prefixes written."""
    model.eval()
    written = []
    for prefix in token_prefixes(cfg):
        out = f"{prefix}_{name}"
        if dataset_exists(out) and not overwrite:
            log(f" > {out}: exists, kept (--overwrite to recompute)")
            continue
        if not dataset_exists(prefix):
            raise FileNotFoundError(f"{prefix}.bin/.idx: no such dataset (named in the config)")
        data = MMapIndexedDataset(prefix)
        with IndexedDatasetWriter(out, np.float32) as writer:
            for start in range(0, len(data), batch_size):
                docs = [data.get(i) for i in range(start, min(start + batch_size, len(data)))]
                for values in document_logps(model, docs, cfg.data.seq_length, device):
                    writer.add_document(values)
        log(f" > wrote {out}.bin/.idx ({len(data)} documents)")
        written.append(str(Path(out)))
    return written
