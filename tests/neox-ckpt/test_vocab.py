"""The YAML's vocabulary keys make neox-core derive exactly the stored embedding rows from the
tokenizer's size, at the checkpoint's TP and at TP 1 (e.g. Pythia: 50277 tokens, 50304 rows)."""

from __future__ import annotations

import shutil

import pytest

from neox_ckpt.cli import main
from neox_ckpt.vocab import vocab_keys


@pytest.mark.parametrize(
    ("rows", "tokens"), [(50304, 50277), (50432, 50277), (128256, 128256), (96, 90), (640, 633)]
)
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_keys_pad_the_tokenizer_to_the_rows(rows, tokens, tp) -> None:
    from neox_core.config.derive import pad_vocab_size

    if rows % tp:
        pytest.skip("rows are padded to a multiple of TP before this is asked")
    keys = vocab_keys(rows, tp, tokens)
    assert keys is not None and keys["padded_vocab_size"] == rows
    d = keys["make_vocab_size_divisible_by"]
    assert pad_vocab_size(tokens, d, tp) == rows
    assert pad_vocab_size(tokens, d, 1) == rows


def test_more_tokens_than_rows_has_no_keys() -> None:
    assert vocab_keys(96, 1, 100) is None


def _tokenizer(path, n: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(n)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


@pytest.mark.parametrize("tokens", [90, 120])
def test_written_yaml_sizes_the_vocabulary(tokens, hf_dirs, tmp_path, capsys) -> None:
    from neox_core.config import load_config

    src = tmp_path / "hf"
    shutil.copytree(hf_dirs["llama"], src)
    _tokenizer(src / "tokenizer.json", tokens)
    out = tmp_path / "neox"
    assert main(["hf-to-neox", "--hf-model", str(src), "--output-dir", str(out)]) == 0
    cfg = load_config([out / "neox.yml"])
    assert cfg.model.padded_vocab_size == 96
    if tokens <= 96:
        assert cfg.model.vocab_size == tokens  # derived from the copied tokenizer
        assert cfg.data.vocab_file == str(out.absolute() / "tokenizer" / "tokenizer.json")
    else:
        assert cfg.data.vocab_file is None
        assert "120 tokens" in capsys.readouterr().out
