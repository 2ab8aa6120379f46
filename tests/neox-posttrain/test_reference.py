"""The reference model either as a frozen copy in memory or as log-probabilities precomputed
beside the data (`neox-posttrain precompute`, `precompute_model_name`): same DPO/KTO loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from posttrain_runs import kto_config, pairwise_config

from neox_core.checkpoint import save_checkpoint
from neox_core.config import load_config
from neox_core.models import build_model
from neox_data.indexed_dataset import MMapIndexedDataset
from neox_posttrain.cli import main as posttrain_main
from neox_posttrain.data import build_posttrain_datasets
from neox_posttrain.impls import DPO, KTO


def _with_reference_checkpoint(cfg_path: Path, tmp_path: Path) -> Path:
    cfg = load_config([cfg_path])
    model = build_model(cfg.model, seed=11)
    save_checkpoint(tmp_path / "init", 0, model=model, save_rng=False)
    extra = tmp_path / "ref.yml"
    extra.write_text(json.dumps({"load": str(tmp_path / "init"), "finetune": True}))
    return extra


def _batch(ds, n: int = 4) -> dict[str, torch.Tensor]:
    items = [ds[j] for j in range(n)]
    return {k: torch.from_numpy(np.stack([x[k] for x in items])) for k in items[0]}


def _datasets(cfg):
    return build_posttrain_datasets(
        cfg, train_iters=2, eval_interval=2, eval_iters=1, train_batch_size=4, seed=5, log=print
    )


def _check(impl_cls, cfg_path: Path, tmp_path: Path, capsys) -> None:
    extra = _with_reference_checkpoint(cfg_path, tmp_path)
    assert posttrain_main(["precompute", str(cfg_path), str(extra), "--model-name", "ref0"]) == 0
    assert "wrote" in capsys.readouterr().out
    in_memory = load_config([cfg_path, extra])
    precomputed = load_config([cfg_path, extra], {"precompute_model_name": "ref0"})

    reference = build_model(in_memory.model, seed=11).eval()
    policy = build_model(in_memory.model, seed=12)  # a policy that differs from the reference
    a = impl_cls(in_memory)
    a.reference = reference
    b = impl_cls(precomputed)
    sample_a = _batch(_datasets(in_memory).train)
    sample_b = _batch(_datasets(precomputed).train)
    assert any(k.endswith("ref") for k in sample_b)
    for k in sample_a:
        assert torch.equal(sample_a[k], sample_b[k])  # the same documents in the same order

    def forward(m, tokens):
        return m(tokens)

    loss_a, metrics_a = a.loss(policy, sample_a, forward)
    loss_b, metrics_b = b.loss(policy, sample_b, forward)
    assert abs(loss_a.item() - loss_b.item()) < 1e-5
    for k, v in metrics_a.items():
        assert abs(v - metrics_b[k]) < 1e-4, k


def test_dpo_precomputed_reference_equals_in_memory(tmp_path: Path, capsys) -> None:
    _check(DPO, pairwise_config(tmp_path, "dpo"), tmp_path, capsys)
    written = MMapIndexedDataset(str(tmp_path / "pairs_pos_document_ref0"))
    tokens = MMapIndexedDataset(str(tmp_path / "pairs_pos_document"))
    assert written.dtype == np.float32
    assert np.array_equal(written.sizes, tokens.sizes)  # one value per token
    assert np.all(written.get(0)[:-1] < 0) and written.get(0)[-1] == 0


def test_kto_precomputed_reference_equals_in_memory(tmp_path: Path, capsys) -> None:
    _check(KTO, kto_config(tmp_path), tmp_path, capsys)
