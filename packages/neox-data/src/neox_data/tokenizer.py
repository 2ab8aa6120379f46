"""Tokenizers under GPT-NeoX's `--tokenizer-type` names, with the eod id and vocab size it uses.

Every type but SentencePiece and the character tokenizer runs on HF `tokenizers`, so encoding
is native code in every case. A `TokenizerSpec` is the picklable recipe worker processes
rebuild the tokenizer from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENIZER_TYPES = (
    "HFTokenizer",
    "HFGPT2Tokenizer",
    "GPT2BPETokenizer",
    "SPMTokenizer",
    "CharLevelTokenizer",
)
UNSUPPORTED_TYPES = {
    "TiktokenTokenizer": (
        "tiktoken is not a dependency of neox-data and its encodings are downloaded at first "
        "use; convert the encoding to a tokenizer.json and use HFTokenizer instead"
    ),
}
EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
CHAR_VOCAB_SIZE = 512


class TokenizerError(ValueError):
    """A tokenizer that cannot be built from the given files and options."""


@dataclass(frozen=True)
class TokenizerSpec:
    """What to load: GPT-NeoX's `--tokenizer-type/--vocab-file/--merge-file`, or a folder."""

    tokenizer_type: str = "HFTokenizer"
    vocab_file: str | None = None
    merge_file: str | None = None
    tokenizer_path: str | None = None  # a local HF tokenizer folder (or a tokenizer.json)
    eod_token: str | None = None  # overrides the eod token's name


class Tokenizer:
    """Encode/decode plus the facts preprocessing needs (vocab size, eod, chat template)."""

    name: str
    vocab_size: int
    eod: int | None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    # chat support (HF-backed tokenizers only)
    @property
    def hf_tokenizer(self) -> Any:
        return None

    @property
    def chat_template(self) -> str | None:
        return None

    @property
    def eos_token(self) -> str | None:
        return None

    @property
    def bos_token(self) -> str | None:
        return None

    def token_id(self, token: str) -> int | None:
        return None


class HFBackedTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` with the settings of a tokenizer folder, if any."""

    def __init__(
        self,
        name: str,
        tok: Any,
        eod_token: str | None,
        config: dict[str, Any] | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.name = name
        self._tok = tok
        self._config = config or {}
        self._chat_template = chat_template
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.eod = tok.token_to_id(eod_token) if eod_token else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        fast = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in fast(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    @property
    def hf_tokenizer(self) -> Any:
        return self._tok

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    @property
    def eos_token(self) -> str | None:
        return _token_text(self._config.get("eos_token"))

    @property
    def bos_token(self) -> str | None:
        return _token_text(self._config.get("bos_token"))

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece `.model` through the sentencepiece library (as GPT-NeoX does)."""

    def __init__(self, model_file: str, eod_token: str | None) -> None:
        try:
            import sentencepiece as spm
        except ImportError as e:  # pragma: no cover - the extra is installed in dev
            raise TokenizerError(
                "SPMTokenizer needs the sentencepiece library: install neox-data[sentencepiece]"
            ) from e
        self.name = "SPMTokenizer"
        self._sp = spm.SentencePieceProcessor(model_file=model_file)
        self.vocab_size = self._sp.get_piece_size()
        self.eod = None
        name = eod_token or EOD_TOKEN
        pid = self._sp.piece_to_id(name)
        # piece_to_id answers unk for unknown pieces; GPT-NeoX would take that silently.
        if self._sp.id_to_piece(pid) == name and pid != self._sp.unk_id():
            self.eod = pid
        elif eod_token is None and self._sp.eos_id() >= 0:
            self.eod = self._sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def token_id(self, token: str) -> int | None:
        pid = self._sp.piece_to_id(token)
        return pid if self._sp.id_to_piece(pid) == token else None


class CharLevelTokenizer(Tokenizer):
    """GPT-NeoX's character tokenizer: one token per UTF-8 byte, vocab 512, eod 0."""

    def __init__(self) -> None:
        self.name = "CharLevelTokenizer"
        self.vocab_size = CHAR_VOCAB_SIZE
        self.eod = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as a dict
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read JSON: {e}") from e


def _folder_settings(folder: Path) -> tuple[dict[str, Any], str | None]:
    """tokenizer_config.json and the chat template of a HF tokenizer folder."""
    config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        config = _read_json(folder / "tokenizer_config.json")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif (folder / "chat_template.json").is_file():
        template = _read_json(folder / "chat_template.json").get("chat_template")
    return config, template if isinstance(template, str) else None


def _load_tokenizer_json(path: Path) -> Any:
    from tokenizers import Tokenizer as HFTok

    try:
        return HFTok.from_file(str(path))
    except Exception as e:
        raise TokenizerError(f"{path}: not a valid tokenizer.json: {e}") from e


def _gpt2_bpe(vocab_file: Path, merge_file: Path) -> Any:
    """Byte-level BPE from GPT-2 style vocab.json + merges.txt, no special-token handling."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers

    for f in (vocab_file, merge_file):
        if not f.is_file():
            raise TokenizerError(f"{f}: file not found")
    try:
        model = models.BPE.from_file(str(vocab_file), str(merge_file))
    except Exception as e:
        raise TokenizerError(
            f"{vocab_file} / {merge_file}: not a GPT-2 vocab and merges: {e}"
        ) from e
    tok = HFTok(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _resolve_hf_source(spec: TokenizerSpec) -> tuple[Path, Path | None]:
    """(tokenizer.json, folder or None) from --tokenizer-path / --vocab-file."""
    raw = spec.tokenizer_path or spec.vocab_file
    if raw is None:
        raise TokenizerError(
            f"{spec.tokenizer_type} needs --vocab-file (a tokenizer.json) or --tokenizer-path "
            "(a local HF tokenizer folder)"
        )
    path = Path(raw)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise TokenizerError(f"{path}: tokenizer folder has no tokenizer.json")
        return path / "tokenizer.json", path
    if not path.is_file():
        raise TokenizerError(
            f"{path}: not found (neox-data loads tokenizers from local files only; "
            "download the tokenizer folder first)"
        )
    return path, path.parent if (path.parent / "tokenizer_config.json").is_file() else None


def build_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """The tokenizer GPT-NeoX would build for these options (see UNSUPPORTED_TYPES)."""
    kind = spec.tokenizer_type
    canonical = {t.lower(): t for t in (*TOKENIZER_TYPES, *UNSUPPORTED_TYPES)}.get(kind.lower())
    if canonical in UNSUPPORTED_TYPES:
        raise TokenizerError(
            f"tokenizer type {canonical} is not supported: {UNSUPPORTED_TYPES[canonical]}"
        )
    if canonical is None:
        raise TokenizerError(
            f"unknown tokenizer type {kind!r}; choose one of {', '.join(TOKENIZER_TYPES)}"
        )
    if canonical == "CharLevelTokenizer":
        return CharLevelTokenizer()
    if canonical == "SPMTokenizer":
        model = spec.vocab_file or spec.tokenizer_path
        if model is None or not Path(model).is_file():
            raise TokenizerError(
                f"SPMTokenizer needs --vocab-file pointing to a .model file ({model})"
            )
        return SentencePieceTokenizer(model, spec.eod_token)
    if canonical == "GPT2BPETokenizer":
        if spec.vocab_file is None or spec.merge_file is None:
            raise TokenizerError(
                "GPT2BPETokenizer needs --vocab-file (vocab.json) and --merge-file"
            )
        tok = _gpt2_bpe(Path(spec.vocab_file), Path(spec.merge_file))
        eod = spec.eod_token or EOD_TOKEN
        if tok.token_to_id(eod) is None:
            raise TokenizerError(f"{spec.vocab_file}: has no {eod} token to use as eod")
        return HFBackedTokenizer(canonical, tok, eod)
    if canonical == "HFGPT2Tokenizer":
        src = spec.vocab_file or spec.tokenizer_path
        if src is None:
            raise TokenizerError(
                "HFGPT2Tokenizer needs --vocab-file/--tokenizer-path: a local GPT-2 tokenizer "
                "folder (GPT-NeoX's default download of 'gpt2' needs the network)"
            )
        folder = Path(src) if Path(src).is_dir() else Path(src).parent
        if (folder / "tokenizer.json").is_file():
            tok = _load_tokenizer_json(folder / "tokenizer.json")
        else:
            tok = _gpt2_bpe(folder / "vocab.json", folder / "merges.txt")
        config, template = _folder_settings(folder)
        # GPT-NeoX adds a padding token to the GPT-2 vocabulary (growing it by one).
        if tok.token_to_id(PAD_TOKEN) is None:
            from tokenizers import AddedToken

            tok.add_special_tokens([AddedToken(PAD_TOKEN, special=True)])
        eod = spec.eod_token or _token_text(config.get("eos_token")) or EOD_TOKEN
        return HFBackedTokenizer(canonical, tok, eod, config, template)
    # HFTokenizer
    json_path, folder = _resolve_hf_source(spec)
    tok = _load_tokenizer_json(json_path)
    config, template = _folder_settings(folder) if folder else ({}, None)
    eod = spec.eod_token
    if eod is None:
        eod = (
            EOD_TOKEN
            if tok.token_to_id(EOD_TOKEN) is not None
            else _token_text(config.get("eos_token"))
        )
    if eod is not None and tok.token_to_id(eod) is None:
        raise TokenizerError(f"{json_path}: eod token {eod!r} is not in the vocabulary")
    return HFBackedTokenizer(canonical, tok, eod, config, template)
