"""`Checkpointer` on one process, and the index arithmetic that lets it load at any layout.

The multi-rank behaviour (TP x DP, ZeRO 3, kill -9) is in tests/neox-core/distributed/
test_checkpoint_layouts.py (`-m slow`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from neox_core.checkpoint import Checkpointer, CheckpointError, save_checkpoint
from neox_core.checkpoint.placement import (
    Region,
    chunk_region,
    index_grid,
    overlap,
    tp_concat_rows,
    tp_shard_rows,
)
from neox_core.checkpoint.sharding import ShardInfo
from neox_core.config.schema import ModelConfig
from neox_core.distributed.tp_layout import canonical_to_tp_global, tp_local_shard
from neox_core.models import build_model
from neox_core.training.optimizer import build_optimizer

CFG = ModelConfig(
    architecture="llama",
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    num_kv_heads=2,
    intermediate_size=48,
    vocab_size=60,
    padded_vocab_size=64,
    max_position_embeddings=16,
    norm="rmsnorm",
    activation="swiglu",
    attention_bias=False,
    mlp_bias=False,
    tie_embeddings=False,
)


@pytest.mark.parametrize(
    ("size", "world", "blocks"), [(12, 2, None), (16, 4, (8, 4, 4)), (12, 3, (6, 6))]
)
def test_shard_rows_are_the_tp_layout_of_tensor_parallelism(size, world, blocks) -> None:
    """Rank r's rows are those `tp_local_shard` gives it, and their concatenation is the
    global (row-permuted) tensor a TP DTensor holds."""
    full = torch.arange(size)
    for r in range(world):
        expected = tp_local_shard(full, 0, world, r, blocks)
        assert tp_shard_rows(size, world, r, blocks).tolist() == expected.tolist()
    glob = canonical_to_tp_global(full, 0, world, blocks)
    assert tp_concat_rows(size, world, blocks).tolist() == glob.tolist()


def test_chunk_regions_and_overlap_across_layouts() -> None:
    """A DP chunk inside a TP shard, intersected with a shard of another TP size."""
    info = ShardInfo(0, 1, 2, 0, 1, (8, 3), (4, 4))  # shard 1 of 2: rows [2, 3, 6, 7]
    chunk = chunk_region(info, (2, 0), (2, 3))  # its last two rows: canonical 6, 7
    assert chunk.axes[0].tolist() == [6, 7]
    target = Region((tp_shard_rows(8, 4, 3, (4, 4)), np.arange(3)))  # TP 4 rank 3: [3, 7]
    tpos, spos = overlap(target, chunk)
    assert tpos[0].tolist() == [1] and spos[0].tolist() == [1]
    assert overlap(Region((np.array([0, 1]), np.arange(3))), chunk) is None
    with pytest.raises(ValueError, match="outside"):
        chunk_region(info, (3, 0), (2, 3))


@pytest.mark.parametrize(
    "positions",
    [([1, 2, 3], [4, 5]), ([0, 2, 5], [4, 5]), ([1, 2], [0, 3, 9]), ([0, 5], [1, 7, 8])],
)
def test_index_grid_selects_the_cartesian_product(positions) -> None:
    """Slices for contiguous runs, index tensors elsewhere: the same cells as numpy's ix_."""
    x = torch.arange(60.0).view(6, 10)
    ps = [np.array(p) for p in positions]
    expected = torch.from_numpy(x.numpy()[np.ix_(*ps)])
    assert torch.equal(x[index_grid(ps)], expected)
    y = torch.zeros(6, 10)
    y[index_grid(ps)] = expected
    assert torch.equal(torch.from_numpy(y.numpy()[np.ix_(*ps)]), expected)
    assert int((y != 0).sum()) == int((expected != 0).sum())


def _model_and_optimizer(seed: int = 7):
    model = build_model(CFG, seed=seed)
    opt = build_optimizer(model, type="adamw", lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.1)  # fmt: skip
    return model, opt


def _step(model, opt, i: int) -> float:
    g = torch.Generator().manual_seed(i)
    text = torch.randint(0, CFG.vocab_size, (2, 9), generator=g)
    logits = model(text[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             text[:, 1:].reshape(-1))  # fmt: skip
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def test_one_process_save_and_resume_is_bit_exact(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    ck = Checkpointer(model, opt, model_cfg=CFG, config={"model": {}}, keep_last_n=1)
    for i in range(2):
        _step(model, opt, i)
    path = ck.save(tmp_path, 2, {"iteration": 2})
    after = [_step(model, opt, i) for i in (2, 3)]
    assert (tmp_path / "latest").read_text() == "global_step2\n"
    assert ck.last_save_seconds >= 0

    model2, opt2 = _model_and_optimizer(seed=99)  # other weights: all must come from the file
    ck2 = Checkpointer(model2, opt2, model_cfg=CFG)
    loaded = ck2.load(tmp_path)
    assert loaded.iteration == 2 and loaded.trainer_state == {"iteration": 2}
    assert [_step(model2, opt2, i) for i in (2, 3)] == after

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 3
    assert set(manifest["files"]) >= {
        "model_tp00_pp00.safetensors",
        "optimizer_tp00_pp00_dp000.safetensors",
        "optimizer_tp00_pp00_dp000.json",
        "rng_rank00000.safetensors",
        "trainer_state.json",
        "config.json",
    }
    with safe_open(str(path / "optimizer_tp00_pp00_dp000.safetensors"), "pt") as f:
        records = json.loads(f.metadata()["neox_shards"])
    rec = records["layers.0.mlp.fc_in.weight::exp_avg"]
    assert rec["tp_blocks"] == [48, 48] and rec["chunk_offset"] == [0, 0]
    assert rec["chunk_shape"] == [96, 32] and rec["full_shape"] == [96, 32]


def test_reads_a_format_v1_checkpoint(tmp_path: Path) -> None:
    """What neox-core 0.1 wrote (single process, no chunk fields, version 1) still loads."""
    model, opt = _model_and_optimizer()
    for i in range(2):
        _step(model, opt, i)
    path = save_checkpoint(tmp_path, 2, model=model, optimizer=opt, trainer_state={})
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    after = [_step(model, opt, i) for i in (2, 3)]
    model2, opt2 = _model_and_optimizer(seed=99)
    Checkpointer(model2, opt2, model_cfg=CFG).load(tmp_path)
    assert [_step(model2, opt2, i) for i in (2, 3)] == after


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    Checkpointer(model, opt, model_cfg=CFG).save(tmp_path, 1)
    other = build_model(ModelConfig(**{**CFG.__dict__, "tie_embeddings": True}), seed=1)
    with pytest.raises(CheckpointError, match=r"unexpected \['lm_head.weight'\]"):
        Checkpointer(other, None).load(tmp_path, weights_only=True)
    padded = build_model(ModelConfig(**{**CFG.__dict__, "padded_vocab_size": 128}), seed=1)
    with pytest.raises(CheckpointError, match="make_vocab_size_divisible_by"):
        Checkpointer(padded, None).load(tmp_path, weights_only=True)
    wider = build_model(ModelConfig(**{**CFG.__dict__, "intermediate_size": 64}), seed=1)
    with pytest.raises(CheckpointError, match=r"fc_in\.weight is"):
        Checkpointer(wider, None).load(tmp_path, weights_only=True)
