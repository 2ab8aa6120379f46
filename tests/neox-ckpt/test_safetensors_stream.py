"""The streaming safetensors writer/reader agree with the safetensors library byte format."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from neox_ckpt.errors import ConversionError
from neox_ckpt.safetensors_stream import SafetensorsReader, SafetensorsWriter


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "c.half": torch.randn(2, 2, 2, generator=g).half(),
        "d.int": torch.arange(5, dtype=torch.int64),
        "e.empty": torch.empty(0, 4),
        "f.scalar": torch.tensor(3.5),
    }


def test_written_file_reads_with_the_safetensors_library(tmp_path) -> None:
    tensors = _tensors()
    path = tmp_path / "x.safetensors"
    w = SafetensorsWriter(
        path, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], {"k": "v"}
    )
    for name in reversed(list(tensors)):  # any order
        w.write(name, tensors[name])
    w.close()
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for n, t in tensors.items():
        assert loaded[n].dtype == t.dtype and torch.equal(loaded[n], t), n
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"}


def test_reader_matches_the_safetensors_library(tmp_path) -> None:
    tensors = _tensors()
    save_file(tensors, tmp_path / "y.safetensors", metadata={"m": "1"})
    r = SafetensorsReader(tmp_path / "y.safetensors")
    assert r.metadata == {"m": "1"} and set(r.entries) == set(tensors)
    for n, t in tensors.items():
        assert torch.equal(r.read(n), t), n


def test_writer_rejects_unplanned_and_missing_tensors(tmp_path) -> None:
    w = SafetensorsWriter(tmp_path / "z.safetensors", [("a", torch.float32, (2,))])
    with pytest.raises(ConversionError, match="not planned"):
        w.write("b", torch.zeros(2))
    with pytest.raises(ConversionError, match="planned"):
        w.write("a", torch.zeros(3))
    with pytest.raises(ConversionError, match="never written"):
        w.close()


def test_reader_rejects_garbage(tmp_path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(ConversionError, match=r"bad\.safetensors"):
        SafetensorsReader(tmp_path / "bad.safetensors")
