"""Damage `neox-train` must not trust: a flipped bit or a truncated file in the newest step
is caught by `neox-ckpt verify` and by resume (one line naming the file and the older step
that still verifies); a disk that fills up during a save leaves the previous step intact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from neox_ckpt.cli import main as neox_ckpt

from .conftest import write_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_steps(zygote, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save directory with global_step1..3 (latest: 3) written by neox-train."""
    root = tmp_path_factory.mktemp("three")
    r = zygote.run(write_run(root, root / "ckpt", iters=3))
    assert r["rc"] == 0, r
    return root / "ckpt"


def _copy(src: Path, tmp_path: Path) -> tuple[Path, Path]:
    save = tmp_path / "ckpt"
    shutil.copytree(src, save)
    return save, write_run(tmp_path, save, iters=4)


def _check_refused(zygote, cfg: Path, damaged: Path, capsys) -> None:
    capsys.readouterr()
    assert neox_ckpt(["verify", str(damaged.parent.parent)]) == 1
    out = capsys.readouterr().out
    assert str(damaged) in out
    r = zygote.run(cfg)
    assert r["rc"] == 2, r
    errors = [line for line in r["tail"] if "error" in line.lower()]
    assert len(errors) == 1 and not any("Traceback" in line for line in r["tail"]), r["tail"]
    assert errors[0].startswith("neox-train: error: checkpoint ")
    assert str(damaged) in errors[0] and "global_step2: set `iteration: 2`" in errors[0]
    assert (damaged.parent.parent / "latest").read_text().strip() == "global_step3"


def test_a_flipped_bit_is_caught_by_verify_and_resume(zygote, three_steps, tmp_path, capsys):
    save, cfg = _copy(three_steps, tmp_path)
    shard = save / "global_step3" / "model_tp00_pp00.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    _check_refused(zygote, cfg, shard, capsys)


def test_a_truncated_file_is_caught_by_verify_and_resume(zygote, three_steps, tmp_path, capsys):
    save, cfg = _copy(three_steps, tmp_path)
    opt = save / "global_step3" / "optimizer_tp00_pp00_dp000.safetensors"
    with open(opt, "r+b") as f:
        f.truncate(opt.stat().st_size - 100)
    _check_refused(zygote, cfg, opt, capsys)
    # sizes are checked whatever `checkpoint_verify` says
    size_only = write_run(tmp_path, save, iters=4, extra='"checkpoint_verify": "size"')
    r = zygote.run(size_only)
    assert r["rc"] == 2 and any(str(opt) in line for line in r["tail"]), r


def test_disk_full_during_a_save(zygote, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2200k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        save = small / "ckpt"
        r = zygote.run(write_run(tmp_path, save, iters=4))
        assert r["rc"] == 2, r
        errors = [line for line in r["tail"] if line.startswith("neox-train: error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], r["tail"]
        assert not any("Traceback" in line for line in r["tail"])
        assert (save / "latest").read_text().strip() == "global_step1"
        assert neox_ckpt(["verify", str(save)]) == 0
        assert sorted(p.name for p in save.iterdir()) == ["global_step1", "latest"]  # no debris
    finally:
        subprocess.run(["umount", str(small)], check=False)
