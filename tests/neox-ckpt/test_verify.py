"""`neox-ckpt verify`: OK on a whole checkpoint; one line per problem, naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from neox_ckpt.cli import main
from neox_core.checkpoint.hashing import hash_file


@pytest.fixture(scope="module")
def converted(hf_dirs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TP 2 x PP 2 neox checkpoint written by hf-to-neox (format v3)."""
    out = tmp_path_factory.mktemp("verify") / "neox"
    args = ["hf-to-neox", "--hf-model", str(hf_dirs["llama_gqa"]), "--output-dir", str(out),
            "--tp", "2", "--pp", "2", "--iteration", "5"]  # fmt: skip
    assert main(args) == 0
    return out


def _verify(capsys, *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["verify", *map(str, args)])
    return rc, capsys.readouterr().out.splitlines()


def test_a_whole_checkpoint_verifies(converted: Path, capsys) -> None:
    rc, lines = _verify(capsys, converted)
    assert rc == 0 and len(lines) == 1
    assert lines[0].startswith("OK global_step5 (iteration 5, TP 2 x PP 2 x DP 1")
    assert "sizes+hashes" in lines[0] and lines[0].endswith("latest -> global_step5")
    manifest = json.loads((converted / "global_step5" / "manifest.json").read_text())
    assert manifest["format_version"] == 3
    for name, rec in manifest["files"].items():  # hashed while writing, equal to a re-read
        assert rec["xxh3_64"] == hash_file(converted / "global_step5" / name)


def test_damage_is_reported_per_file(converted: Path, tmp_path: Path, capsys) -> None:
    save = tmp_path / "save"
    shutil.copytree(converted, save)
    step = save / "global_step5"
    f = step / "model_tp01_pp00.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    f = step / "model_tp01_pp01.safetensors"  # a pipeline stage 1 file
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    (step / "model_tp00_pp01.safetensors").unlink()
    (step / "stray.bin").write_bytes(b"x")

    rc, lines = _verify(capsys, step, "--size-only")
    assert rc == 1
    assert any("model_tp00_pp01.safetensors: missing" in line for line in lines)
    assert any("stray.bin: not listed in the manifest" in line for line in lines)
    assert not any("model_tp01_pp00" in line for line in lines)  # no hashes: not seen

    rc, lines = _verify(capsys, save)
    assert rc == 1
    assert any("model_tp01_pp00.safetensors: content hash xxh3_64" in line for line in lines)
    assert any("model_tp01_pp01.safetensors: content hash xxh3_64" in line for line in lines)
    assert any("latest: names global_step5, which does not verify" in line for line in lines)
    assert all(line.startswith("neox-ckpt verify: ") for line in lines)


def test_tensors_are_checked_against_the_model_in_config_json(
    converted: Path, tmp_path: Path, capsys
) -> None:
    step = tmp_path / "global_step5"
    shutil.copytree(converted / "global_step5", step)
    cfg = json.loads((step / "config.json").read_text())
    cfg["model"]["intermediate_size"] = cfg["model"]["intermediate_size"] * 2
    (step / "config.json").write_text(json.dumps(cfg))
    manifest = json.loads((step / "manifest.json").read_text())
    manifest["files"]["config.json"] = {
        "size": (step / "config.json").stat().st_size,
        "xxh3_64": hash_file(step / "config.json"),
    }
    (step / "manifest.json").write_text(json.dumps(manifest))
    rc, lines = _verify(capsys, step)
    assert rc == 1
    assert any("mlp.fc_in.weight" in line and "the model in config.json has" in line
               for line in lines)  # fmt: skip


def test_latest_naming_a_missing_step(converted: Path, tmp_path: Path, capsys) -> None:
    save = tmp_path / "save"
    shutil.copytree(converted, save)
    (save / "latest").write_text("global_step9\n")
    rc, lines = _verify(capsys, save)
    assert rc == 1 and any("latest: names 'global_step9'" in line for line in lines)
