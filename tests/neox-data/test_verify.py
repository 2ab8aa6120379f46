"""`neox-data verify` on pairs written by the real writer (and `neox-data tokenize`), then damaged."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neox_data.cli import main
from neox_data.indexed_dataset import HEADER_SIZE, write_dataset

DOCS = [[1, 2, 3], [7], [4, 5, 6, 7, 8], [9, 9]]


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    prefix = tmp_path / "corpus_text_document"
    write_dataset(prefix, [np.array(d) for d in DOCS], np.uint16)
    return prefix


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    rc = main(["verify", *args])
    return rc, capsys.readouterr().out.splitlines()


def test_sound_pair_gives_one_ok_line(pair: Path, capsys) -> None:
    rc, lines = _verify(capsys, str(pair), "--vocab-size", "10")
    assert rc == 0
    assert lines == [f"{pair}: OK (uint16, 4 documents, 4 items, 11 tokens, token ids < 10)"]


def test_truncated_bin_names_the_file_and_sizes(pair: Path, capsys) -> None:
    bin_ = pair.with_suffix(".bin")
    bin_.write_bytes(bin_.read_bytes()[:-2])
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"{bin_}: 20 bytes, but item 3 spans bytes 18-22")
    assert "truncated" in lines[0]


def test_bin_with_trailing_bytes(pair: Path, capsys) -> None:
    bin_ = pair.with_suffix(".bin")
    bin_.write_bytes(bin_.read_bytes() + b"\0\0")
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1
    assert lines == [
        f"{bin_}: 24 bytes, expected 22 (last pointer + last size x 2): trailing bytes"
    ]


def test_truncated_idx(pair: Path, capsys) -> None:
    idx = pair.with_suffix(".idx")
    idx.write_bytes(idx.read_bytes()[:-8])
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1
    assert lines == [
        f"{idx}: 114 bytes, but the header (items N=4, doc_idx D=5) implies 122: "
        "the index is truncated"
    ]
    idx.write_bytes(idx.read_bytes()[:20])
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1 and lines == [f"{idx}: 20 bytes, shorter than the 34-byte header"]


def test_corrupted_pointer_gives_its_byte_offset(pair: Path, capsys) -> None:
    idx = pair.with_suffix(".idx")
    raw = bytearray(idx.read_bytes())
    at = HEADER_SIZE + 4 * 4 + 8 * 2  # pointers[2]
    raw[at : at + 8] = struct.pack("<q", 1000)
    idx.write_bytes(bytes(raw))
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1
    assert f"{idx}: byte {at}, item 2: pointer 1000, expected 8" in lines[0]
    assert any("item 2 spans bytes 1000-1010" in line for line in lines)


def test_bad_header_and_doc_idx(pair: Path, capsys) -> None:
    idx = pair.with_suffix(".idx")
    good = idx.read_bytes()
    idx.write_bytes(b"NOTANIDX\0" + good[9:])
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1 and lines[0].startswith(f"{idx}: byte 0: magic")
    idx.write_bytes(good[:17] + bytes([42]) + good[18:])
    rc, lines = _verify(capsys, str(pair))
    assert lines == [f"{idx}: byte 17: unknown dtype code 42 (known: 1-8)"]
    raw = bytearray(good)
    d_at = HEADER_SIZE + 12 * 4
    raw[d_at + 16 : d_at + 24] = struct.pack("<q", 0)  # doc_idx [0, 1, 0, 3, 4]
    raw[d_at + 32 : d_at + 40] = struct.pack("<q", 3)  # ... and ends at 3, not 4
    idx.write_bytes(bytes(raw))
    rc, lines = _verify(capsys, str(pair))
    assert rc == 1
    assert lines == [
        f"{idx}: byte {d_at + 16}, document 2: doc_idx decreases (1 -> 0)",
        f"{idx}: byte {d_at + 32}, doc_idx ends at 3, not at the item count 4",
    ]


def test_out_of_vocab_token_names_byte_and_document(pair: Path, capsys) -> None:
    bin_ = pair.with_suffix(".bin")
    raw = bytearray(bin_.read_bytes())
    raw[12:14] = struct.pack("<H", 50)  # token 2 of document 2
    bin_.write_bytes(bytes(raw))
    rc, lines = _verify(capsys, str(pair), "--vocab-size", "10")
    assert rc == 1
    assert lines == [
        f"{bin_}: byte 12, item 2, document 2: token id 50 is outside the vocabulary of 10 "
        "(1 such tokens)"
    ]
    rc, lines = _verify(capsys, str(pair))  # structure alone is fine
    assert rc == 0


def test_tokenized_output_against_its_tokenizer_in_a_process_without_torch(
    tok_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"hello world {i}"}) + "\n" for i in range(9)))
    prefix = tmp_path / "out"
    args = ["--input", str(src), "--output-prefix", str(prefix), "--workers", "1"]
    assert main(["tokenize", *args, "--tokenizer-path", str(tok_dir)]) == 0
    doc = f"{prefix}_text_document"
    code = (
        "import sys; from neox_data.cli import main; "
        f"rc = main(['verify', {doc!r}, '--tokenizer', {str(tok_dir)!r}]); "
        "assert 'torch' not in sys.modules, 'verify imported torch'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{doc}: OK (uint16, 9 documents")
    assert "token ids < 400)" in proc.stdout and proc.stdout.count("\n") == 1
    missing = subprocess.run(
        [sys.executable, "-m", "neox_data.cli", "verify", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert missing.stdout.splitlines() == [
        f"{tmp_path / 'nope'}.idx: file not found",
        f"{tmp_path / 'nope'}.bin: file not found",
    ]
