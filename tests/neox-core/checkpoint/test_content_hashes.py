"""Format v3: every file's size and xxh3_64 hash in the manifest; damage is caught on load
(hashes per `verify`, sizes and headers always); v2 checkpoints still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neox_core.checkpoint import (
    Checkpointer,
    DamagedCheckpointError,
    load_checkpoint,
    newest_usable_step,
    read_manifest,
    save_checkpoint,
)
from neox_core.checkpoint.hashing import hash_file, write_safetensors_hashed


def _model(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential()
    model.add_module("embed", torch.nn.Embedding(16, 8))
    model.add_module("lm_head", torch.nn.Linear(8, 16, bias=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randint(0, 16, (2, 3))).sum().backward()
    opt.step()
    return model, opt


def _flip_bit(path: Path, from_end: int = 9) -> None:
    with open(path, "r+b") as f:
        f.seek(-from_end, 2)
        b = f.read(1)
        f.seek(-from_end, 2)
        f.write(bytes([b[0] ^ 0x10]))


def test_manifest_v3_records_size_and_hash_of_every_file(tmp_path: Path) -> None:
    model, opt = _model()
    step = save_checkpoint(tmp_path, 3, model=model, optimizer=opt, config={"a": 1},
                           config_files={"run.yml": "a: 1\n"})  # fmt: skip
    manifest = read_manifest(step, verify="hash")
    assert manifest["format_version"] == 3
    on_disk = {str(f.relative_to(step)) for f in step.rglob("*") if f.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    for name, rec in manifest["files"].items():
        assert rec == {"size": (step / name).stat().st_size, "xxh3_64": hash_file(step / name)}


def test_streamed_safetensors_are_readable_by_safetensors(tmp_path: Path) -> None:
    tensors = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "flags": torch.tensor([True, False, True]),
        "step": torch.tensor(7.0),
    }
    rec = write_safetensors_hashed(tmp_path / "t.safetensors", tensors, {"k": "v"})
    assert rec["size"] == (tmp_path / "t.safetensors").stat().st_size
    assert rec["xxh3_64"] == hash_file(tmp_path / "t.safetensors")
    back = load_file(str(tmp_path / "t.safetensors"))
    for k, t in tensors.items():
        assert torch.equal(back[k], t) and back[k].dtype == t.dtype


def test_a_flipped_bit_is_caught_with_hash_and_passes_with_size(tmp_path: Path) -> None:
    model, opt = _model()
    save_checkpoint(tmp_path, 1, model=model, optimizer=opt)
    step = save_checkpoint(tmp_path, 2, model=model, optimizer=opt)
    _flip_bit(step / "model_tp00_pp00.safetensors")
    with pytest.raises(DamagedCheckpointError, match=r"model_tp00_pp00\.safetensors: content hash"):
        load_checkpoint(tmp_path, model=_model(1)[0])
    with pytest.raises(DamagedCheckpointError) as e:
        Checkpointer(_model(1)[0]).load(tmp_path)
    assert e.value.file == step / "model_tp00_pp00.safetensors"
    # `checkpoint_verify: size` trusts the contents: the damaged step loads
    assert load_checkpoint(tmp_path, model=_model(1)[0], verify="size").iteration == 2
    assert Checkpointer(_model(1)[0]).load(tmp_path, verify="size").iteration == 2
    assert newest_usable_step(tmp_path, 2) == tmp_path / "global_step1"
    assert newest_usable_step(tmp_path, 1) is None


def test_truncation_and_header_damage_are_caught_without_hashes(tmp_path: Path) -> None:
    model, opt = _model()
    step = save_checkpoint(tmp_path, 1, model=model, optimizer=opt)
    opt_file = step / "optimizer_tp00_pp00_dp000.safetensors"
    data = opt_file.read_bytes()
    opt_file.write_bytes(data[:-10])
    with pytest.raises(DamagedCheckpointError, match=r"optimizer_tp00_pp00_dp000.*truncated"):
        read_manifest(step, verify="size")
    opt_file.write_bytes(data)
    read_manifest(step, verify="size")
    weights = step / "model_tp00_pp00.safetensors"
    raw = bytearray(weights.read_bytes())
    at = raw.index(b'"shape":[') + len(b'"shape":[')
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")  # same length, wrong shape
    weights.write_bytes(bytes(raw))
    with pytest.raises(DamagedCheckpointError, match=r"model_tp00_pp00\.safetensors: safetensors"):
        read_manifest(step, verify="size")


def test_a_v2_checkpoint_still_loads(tmp_path: Path) -> None:
    """v2 manifests record sizes only (a bare number per file); they load, hashes unchecked."""
    model, opt = _model()
    step = save_checkpoint(tmp_path, 4, model=model, optimizer=opt, trainer_state={"it": 4})
    manifest = json.loads((step / "manifest.json").read_text())
    manifest["format_version"] = 2
    manifest["files"] = {n: r["size"] for n, r in manifest["files"].items()}
    (step / "manifest.json").write_text(json.dumps(manifest))
    twin, twin_opt = _model(1)
    loaded = Checkpointer(twin, twin_opt).load(tmp_path, verify="hash")
    assert loaded.iteration == 4 and loaded.trainer_state == {"it": 4}
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    (step / "trainer_state.json").write_text("{}")  # v2 still checks sizes
    with pytest.raises(DamagedCheckpointError, match=r"trainer_state\.json"):
        load_checkpoint(tmp_path, model=_model(1)[0])


def test_checkpoint_verify_is_a_neox_key_with_two_values(tmp_path: Path) -> None:
    from neox_core.config import ConfigError, load_config

    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "num_layers: 2\nhidden_size: 8\nnum_attention_heads: 2\nvocab_size: 16\npos_emb: rotary\n"
    )
    assert load_config([cfg]).checkpoint.checkpoint_verify == "hash"
    assert load_config([cfg], {"checkpoint_verify": "size"}).checkpoint.checkpoint_verify == "size"
    with pytest.raises(ConfigError, match="checkpoint_verify"):
        load_config([cfg], {"checkpoint_verify": "crc"})
