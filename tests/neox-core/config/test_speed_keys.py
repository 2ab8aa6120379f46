"""The neox keys `compile`, `attention_kernel` and `activation_checkpoint_mode`, and how
GPT-NeoX's key maps on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from neox_core.config import load_config
from neox_core.config.errors import ConfigError

BASE = "num_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\nvocab_size: 256\npos_emb: rotary\n"


def _load(tmp_path: Path, extra: str):
    path = tmp_path / "c.yml"
    path.write_text(BASE + extra, encoding="utf-8")
    return load_config([path])


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("", "auto"),
        ("compile: true", "true"),
        ("compile: false", "false"),
        ("compile: Auto", "auto"),
    ],
)
def test_compile_switch(tmp_path: Path, line: str, value: str) -> None:
    assert _load(tmp_path, line).training.compile == value


def test_compile_rejects_other_values_naming_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yml:6: compile: expected true, false or auto"):
        _load(tmp_path, "compile: fast")


@pytest.mark.parametrize(
    ("extra", "mode", "recompute"),
    [
        ("", "none", False),
        ("checkpoint_activations: true", "full", True),
        ("activation_checkpoint_mode: selective", "selective", False),
        ("activation_checkpoint_mode: full", "full", True),
    ],
)
def test_activation_checkpointing_mode(
    tmp_path: Path, extra: str, mode: str, recompute: bool
) -> None:
    m = _load(tmp_path, extra).model
    assert (m.activation_checkpointing, m.checkpoint_activations) == (mode, recompute)


def test_activation_checkpointing_rejects_unknown_modes(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"c\.yml:6: activation_checkpoint_mode.*none, full, selective"
    ):
        _load(tmp_path, "activation_checkpoint_mode: some")


def test_attention_kernel_key(tmp_path: Path) -> None:
    assert _load(tmp_path, "").training.attention_kernel == "auto"
    assert _load(tmp_path, "attention_kernel: fa4").training.attention_kernel == "fa4"
    with pytest.raises(ConfigError, match=r"c\.yml:6: attention_kernel.*auto, sdpa, fa4"):
        _load(tmp_path, "attention_kernel: flash3")
