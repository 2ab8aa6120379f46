"""Tokenizer types against the libraries GPT-NeoX builds them from."""

from __future__ import annotations

from pathlib import Path

import pytest

from neox_data.tokenizer import TokenizerError, TokenizerSpec, build_tokenizer

TEXTS = [
    "Hello world! The quick brown fox.",
    "café 東京 🙂 <|endoftext|> tabs\tand\nnewlines",
    "  leading spaces and 1234 numbers",
]


def test_hf_tokenizer_matches_tokenizers_encode(tok_dir: Path, hf_tok) -> None:
    for spec in (
        TokenizerSpec("HFTokenizer", vocab_file=str(tok_dir / "tokenizer.json")),
        TokenizerSpec("hftokenizer", tokenizer_path=str(tok_dir)),
    ):
        tok = build_tokenizer(spec)
        assert tok.name == "HFTokenizer"
        assert tok.vocab_size == hf_tok.get_vocab_size() == 400
        assert tok.eod == hf_tok.token_to_id("<|endoftext|>")
        for text in TEXTS:
            assert tok.encode(text) == hf_tok.encode(text).ids
            assert tok.decode(tok.encode(text)) == text
        assert tok.encode_batch(TEXTS) == [hf_tok.encode(t).ids for t in TEXTS]


def test_gpt2_bpe_matches_transformers_gpt2_tokenizer(tok_dir: Path) -> None:
    from transformers import GPT2Tokenizer

    ref = GPT2Tokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))
    tok = build_tokenizer(
        TokenizerSpec(
            "GPT2BPETokenizer",
            vocab_file=str(tok_dir / "vocab.json"),
            merge_file=str(tok_dir / "merges.txt"),
        )
    )
    assert tok.vocab_size == len(ref.get_vocab())
    assert tok.eod == ref.get_vocab()["<|endoftext|>"]
    # GPT-NeoX's GPT-2 BPE has no special tokens: "<|endoftext|>" in text is plain text.
    for text in TEXTS:
        expected = ref.convert_tokens_to_ids(ref.tokenize(text, split_special_tokens=True))
        assert tok.encode(text) == expected


def test_hf_gpt2_tokenizer_adds_padding_token(tok_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gpt2"
    folder.mkdir()
    for f in ("vocab.json", "merges.txt"):
        (folder / f).write_bytes((tok_dir / f).read_bytes())
    tok = build_tokenizer(TokenizerSpec("HFGPT2Tokenizer", vocab_file=str(folder)))
    # the trained vocab already holds <|padding|>; GPT-NeoX adds it only when missing
    assert tok.vocab_size == 400
    assert tok.eod == 0


def test_sentencepiece(tmp_path: Path) -> None:
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 30), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "m"),
        vocab_size=80,
        user_defined_symbols=["<|endoftext|>"],
        hard_vocab_limit=False,
    )
    ref = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    tok = build_tokenizer(TokenizerSpec("SPMTokenizer", vocab_file=str(tmp_path / "m.model")))
    assert tok.vocab_size == ref.get_piece_size()
    assert tok.eod == ref.piece_to_id("<|endoftext|>")
    assert tok.encode_batch(TEXTS) == [ref.encode(t) for t in TEXTS]


def test_char_level() -> None:
    tok = build_tokenizer(TokenizerSpec("CharLevelTokenizer"))
    assert (tok.vocab_size, tok.eod) == (512, 0)
    assert tok.encode("aé") == [97, 0xC3, 0xA9]
    assert tok.decode(tok.encode("aé")) == "aé"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (TokenizerSpec("TiktokenTokenizer", vocab_file="cl100k_base"), "not supported"),
        (TokenizerSpec("BertWordPiece"), "unknown tokenizer type"),
        (TokenizerSpec("HFTokenizer"), "needs --vocab-file"),
        (TokenizerSpec("HFTokenizer", vocab_file="/nonexistent/tokenizer.json"), "not found"),
        (TokenizerSpec("GPT2BPETokenizer", vocab_file="v.json"), "--merge-file"),
    ],
)
def test_bad_tokenizer_options_are_explained(spec: TokenizerSpec, match: str) -> None:
    with pytest.raises(TokenizerError, match=match):
        build_tokenizer(spec)
