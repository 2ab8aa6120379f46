"""Checkpoint format v1: round trip, shard metadata, integrity checks, retention."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from neox_core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    Ranks,
    capture_rng_state,
    delete_old_checkpoints,
    is_save_iteration,
    load_checkpoint,
    read_manifest,
    read_shard_infos,
    resolve_checkpoint_dir,
    save_checkpoint,
    tp_split_dim,
)


class Block(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.input_layernorm = torch.nn.LayerNorm(d)
        self.query_key_value = torch.nn.Linear(d, 3 * d)
        self.dense = torch.nn.Linear(d, d)


class Tiny(torch.nn.Module):
    """Parameter names in the style of neox's models (what the split rules key on)."""

    def __init__(self, d: int = 8, vocab: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.layers = torch.nn.ModuleList([Block(d), Block(d)])
        self.final_norm = torch.nn.LayerNorm(d)
        self.lm_head = torch.nn.Linear(d, vocab, bias=False)
        self.register_buffer("inv_freq", torch.arange(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for b in self.layers:
            h = h + b.dense(b.query_key_value(b.input_layernorm(h))[..., : h.shape[-1]])
        return self.lm_head(self.final_norm(h))


def _trained(seed: int = 0) -> tuple[Tiny, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        loss = model(torch.randint(0, 16, (2, 5))).logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_round_trip_restores_weights_optimizer_rng_and_state(tmp_path: Path) -> None:
    model, opt = _trained()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    path = save_checkpoint(
        tmp_path,
        3,
        model=model,
        optimizer=opt,
        trainer_state={"scheduler": {"num_iters": 3}, "data": {"train_samples": 6}},
        config={"model": {"hidden_size": 8}},
        config_files={"a.yml": "hidden_size: 8\n"},
    )
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))
    assert path == tmp_path / "global_step3"
    assert (tmp_path / "latest").read_text() == "global_step3\n"

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    fresh, fresh_opt = _trained(seed=1)
    loaded = load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt)
    assert loaded.iteration == 3
    assert loaded.trainer_state == {"scheduler": {"num_iters": 3}, "data": {"train_samples": 6}}
    assert loaded.config == {"model": {"hidden_size": 8}}
    assert (path / "configs" / "a.yml").read_text() == "hidden_size: 8\n"
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    sa, sb = opt.state_dict(), fresh_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i, st in sa["state"].items():
        for k, v in st.items():
            assert torch.equal(v, sb["state"][i][k]), (i, k)
    assert random.random() == expected_draws[0]
    assert np.random.rand() == expected_draws[1]
    assert torch.equal(torch.rand(3), expected_draws[2])


def test_continuing_after_load_matches_continuing_without(tmp_path: Path) -> None:
    model, opt = _trained()
    save_checkpoint(tmp_path, 3, model=model, optimizer=opt)
    batch = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(3))
    twin, twin_opt = _trained(seed=5)
    load_checkpoint(tmp_path, model=twin, optimizer=twin_opt)
    for m, o in ((model, opt), (twin, twin_opt)):
        m(batch).logsumexp(-1).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_files_are_safetensors_and_json_only_with_manifest(tmp_path: Path) -> None:
    model, opt = _trained()
    path = save_checkpoint(tmp_path, 10, model=model, optimizer=opt, config_files={"c.yml": "x"})
    manifest = read_manifest(path)
    assert manifest["format_version"] == FORMAT_VERSION == 3
    assert manifest["iteration"] == 10
    for f in path.rglob("*"):
        if f.is_file():
            assert f.suffix in {".safetensors", ".json", ".yml"}, f
            assert not f.read_bytes().startswith(b"\x80"), f"{f} looks pickled"
    assert set(manifest["files"]) == {
        str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()
    } - {"manifest.json"}


def test_per_tensor_shard_metadata(tmp_path: Path) -> None:
    model, opt = _trained()
    path = save_checkpoint(tmp_path, 1, model=model, optimizer=opt)
    infos = read_shard_infos(path / "model_tp00_pp00.safetensors")
    assert infos["layers.0.query_key_value.weight"].tp_dim == 0
    assert infos["layers.0.query_key_value.bias"].tp_dim == 0
    assert infos["layers.1.dense.weight"].tp_dim == 1
    assert infos["layers.1.dense.bias"].tp_dim is None
    assert infos["layers.0.input_layernorm.weight"].tp_dim is None
    assert infos["embed.weight"].tp_dim == 0
    assert infos["lm_head.weight"].tp_dim == 0
    assert infos["inv_freq"].tp_dim is None
    assert infos["embed.weight"].full_shape == (16, 8)
    assert {i.tp_world_size for i in infos.values()} == {1}
    opt_infos = read_shard_infos(path / "optimizer_tp00_pp00_dp000.safetensors")
    assert opt_infos["layers.1.dense.weight::exp_avg"].tp_dim == 1
    with safe_open(str(path / "model_tp00_pp00.safetensors"), "pt") as f:
        assert f.metadata()["neox_format_version"] == "3"


def test_split_rules_refuse_unknown_names() -> None:
    assert tp_split_dim("layers.3.mlp.dense_4h_to_h.weight", 2) == 1
    assert tp_split_dim("layers.3.mlp.gate_proj.weight", 2) == 0
    with pytest.raises(ValueError, match="mystery"):
        tp_split_dim("layers.0.mystery.weight", 2)


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    model, _ = _trained()
    model.lm_head.weight = model.embed.weight
    save_checkpoint(tmp_path, 1, model=model)
    fresh, _ = _trained(seed=2)
    fresh.lm_head.weight = fresh.embed.weight
    load_checkpoint(tmp_path, model=fresh)
    assert torch.equal(fresh.lm_head.weight, model.embed.weight)


def test_finetune_loads_weights_only(tmp_path: Path) -> None:
    model, opt = _trained()
    save_checkpoint(tmp_path, 5, model=model, optimizer=opt, trainer_state={"x": 1})
    fresh = Tiny()
    fresh_opt = torch.optim.AdamW(fresh.parameters())
    loaded = load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt, weights_only=True)
    assert loaded.iteration == 0
    assert loaded.trainer_state == {}
    assert fresh_opt.state_dict()["state"] == {}
    assert torch.equal(fresh.embed.weight, model.embed.weight)


def test_resolve_by_iteration_and_errors(tmp_path: Path) -> None:
    model, _ = _trained()
    for it in (2, 4):
        save_checkpoint(tmp_path, it, model=model)
    assert resolve_checkpoint_dir(tmp_path).name == "global_step4"
    assert resolve_checkpoint_dir(tmp_path, 2).name == "global_step2"
    with pytest.raises(CheckpointError, match=r"available: \[2, 4\]"):
        resolve_checkpoint_dir(tmp_path, 3)
    with pytest.raises(CheckpointError, match="latest"):
        resolve_checkpoint_dir(tmp_path / "nothing")
    weights = tmp_path / "global_step4" / "model_tp00_pp00.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path, model=Tiny())
    manifest = tmp_path / "global_step2" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(tmp_path, model=Tiny(), iteration=2)


def test_load_rejects_a_different_model(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, model=Tiny())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path, model=Tiny(d=4))


def test_exception_mid_save_leaves_latest_and_no_debris(tmp_path: Path) -> None:
    model, opt = _trained()
    save_checkpoint(tmp_path, 1, model=model, optimizer=opt)
    with pytest.raises(TypeError):  # weights and optimizer already written when this fails
        save_checkpoint(tmp_path, 2, model=model, optimizer=opt, trainer_state={"x": object()})
    assert (tmp_path / "latest").read_text().strip() == "global_step1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step1", "latest"]
    load_checkpoint(tmp_path, model=Tiny(), optimizer=None)


def test_save_policy_and_retention(tmp_path: Path) -> None:
    assert [i for i in range(1, 13) if is_save_iteration(i, 5, [3])] == [3, 5, 10]
    assert not is_save_iteration(4, None, None)
    model = Tiny()
    for it in (1, 2, 3, 4):
        save_checkpoint(tmp_path, it, model=model)
    (tmp_path / ".tmp-global_step5-123").mkdir()
    deleted = delete_old_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in deleted) == ["global_step1", "global_step2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step3", "global_step4", "latest"]
    # `latest` is never deleted, even when it is not among the newest
    (tmp_path / "latest").write_text("global_step3\n")
    save_checkpoint(tmp_path, 9, model=model)
    (tmp_path / "latest").write_text("global_step3\n")
    delete_old_checkpoints(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step3", "global_step9", "latest"]


def test_debris_of_interrupted_saves_is_removed_without_keep_last_n(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, model=Tiny())
    for name in (".tmp-global_step2-123", ".old-global_step1-456"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    live = tmp_path / f".tmp-global_step3-{os.getpid()}"  # this process may be saving it
    live.mkdir()
    assert delete_old_checkpoints(tmp_path, None) == []
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [live.name, "global_step1", "latest"]


def test_each_rank_gets_back_its_own_rng_state(tmp_path: Path) -> None:
    torch.manual_seed(1)
    rank0 = capture_rng_state()
    torch.rand(7)
    rank1 = capture_rng_state()  # a different position of the same generator
    save_checkpoint(tmp_path, 1, model=Tiny(), rng_states={0: rank0, 1: rank1})
    files = read_manifest(tmp_path / "global_step1")["files"]
    assert {"rng_rank00000.safetensors", "rng_rank00001.json"} <= set(files)
    draws = {}
    for rank in (1, 0):
        torch.manual_seed(99)
        load_checkpoint(tmp_path, model=Tiny(), ranks=Ranks(global_rank=rank))
        draws[rank] = torch.rand(3)
    torch.set_rng_state(rank1[0]["torch_cpu"])
    assert torch.equal(draws[1], torch.rand(3))
    torch.set_rng_state(rank0[0]["torch_cpu"])
    assert torch.equal(draws[0], torch.rand(3))
    with pytest.raises(CheckpointError, match="global rank 2"):
        load_checkpoint(tmp_path, model=Tiny(), ranks=Ranks(global_rank=2))
    load_checkpoint(tmp_path, model=Tiny(), ranks=Ranks(global_rank=2), restore_rng=False)


def test_resaving_a_step_replaces_it_whole(tmp_path: Path) -> None:
    model, opt = _trained()
    save_checkpoint(tmp_path, 2, model=model, trainer_state={"v": 1})
    save_checkpoint(tmp_path, 4, model=model, trainer_state={"v": 1})
    (tmp_path / "latest").write_text("global_step4\n")
    with torch.no_grad():
        model.embed.weight.add_(1.0)
    save_checkpoint(tmp_path, 4, model=model, optimizer=opt, trainer_state={"v": 2})
    assert (tmp_path / "latest").read_text() == "global_step4\n"
    fresh = Tiny()
    loaded = load_checkpoint(tmp_path, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()))
    assert loaded.trainer_state == {"v": 2}
    assert torch.equal(fresh.embed.weight, model.embed.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step2", "global_step4", "latest"]
