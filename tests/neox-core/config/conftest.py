"""Helpers to write GPT-NeoX-style YAML files for the config tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# A minimal model file in GPT-NeoX's style; tests add or override keys in further files.
TINY_MODEL = """\
{
  # tiny model
  "num-layers": 2,
  "hidden-size": 64,
  "num-attention-heads": 4,
  "seq-length": 128,
  "max-position-embeddings": 128,
  "pos-emb": "rotary",
  "vocab_size": 1000,
}
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def tiny(write: Callable[[str, str], Path]) -> Path:
    return write("tiny.yml", TINY_MODEL)
