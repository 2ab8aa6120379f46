"""The workspace contract: six packages, each with a CLI that answers without torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIS = {
    "neox-kernels": ("neox_kernels", "neox-kernels"),
    "neox-data": ("neox_data", "neox-data"),
    "neox-core": ("neox_core", "neox-train"),
    "neox-ckpt": ("neox_ckpt", "neox-ckpt"),
    "neox-slurm": ("neox_slurm", "neox-slurm"),
    "neox-posttrain": ("neox_posttrain", "neox-posttrain"),
}


def test_workspace_members_are_exactly_the_six_packages() -> None:
    members = sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir())
    assert members == sorted(CLIS)
    for name in members:
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
        assert meta["project"]["name"] == name
        assert (ROOT / "packages" / name / "CHANGELOG.md").is_file()
        assert (ROOT / "tests" / name).is_dir()


@pytest.mark.parametrize("package", sorted(CLIS))
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_cli_answers_without_importing_torch(package: str, flag: str) -> None:
    module, prog = CLIS[package]
    # Run the entry point in a fresh interpreter and report whether torch got imported.
    code = (
        "import sys\n"
        f"from {module}.cli import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip().endswith("NO_TORCH"), out
    if flag == "--version":
        from importlib.metadata import version

        assert f"{prog} {version(package)}" in out
    else:
        assert f"usage: {prog}" in out


def test_kernels_extension_is_compiled() -> None:
    from neox_kernels import _index

    assert Path(_index.__file__).suffix in {".so", ".pyd"}
