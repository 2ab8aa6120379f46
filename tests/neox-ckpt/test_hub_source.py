"""Hub names go through huggingface_hub's snapshot_download with --revision (no network here:
a cache laid out as huggingface_hub lays it out, read in offline mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _run(args: list[str], hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "NEOX_CKPT_PROGRESS": "0"}
    code = "import sys; from neox_ckpt.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_hub_revision_resolves_through_the_cache(hf_dirs, tmp_path) -> None:
    repo = tmp_path / "hf_home" / "hub" / "models--acme--tiny-pythia"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(hf_dirs["pythia"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "step1000").write_text(COMMIT)
    out = tmp_path / "neox"
    done = _run(
        [
            "hf-to-neox",
            "--hf-model",
            "acme/tiny-pythia",
            "--revision",
            "step1000",
            "--output-dir",
            str(out),
        ],
        tmp_path / "hf_home",
    )
    assert done.returncode == 0, done.stderr
    assert "acme/tiny-pythia at revision step1000" in (out / "neox.yml").read_text()
    missing = _run(
        [
            "hf-to-neox",
            "--hf-model",
            "acme/tiny-pythia",
            "--revision",
            "step2000",
            "--output-dir",
            str(tmp_path / "other"),
        ],
        tmp_path / "hf_home",
    )
    assert missing.returncode == 2
    assert "acme/tiny-pythia (revision step2000)" in missing.stderr
    assert not (tmp_path / "other").exists()
