"""Turning a chunk of raw documents into token arrays: what each worker process runs.

A record with a problem (bad UTF-8 or a lone surrogate escape, malformed JSON, missing key, non-string value, empty
document, a chat that cannot be rendered) is reported with its location and contributes
nothing to any output, so all outputs stay aligned document for document.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

import numpy as np

from neox_data.chat import (
    ChatEncoder,
    ChatFormatError,
    ChatOptions,
    check_messages,
    utf8_problem,
)
from neox_data.indexed_dataset import best_fitting_dtype
from neox_data.readers import Chunk, load_range
from neox_data.tokenizer import Tokenizer, TokenizerSpec, build_tokenizer

Mode = Literal["text", "chat", "dpo", "kto"]
CHAT_KEYS = ("messages", "conversation", "conversations")


class RecordError(ValueError):
    """One bad record; the message names the problem, the location is added by the caller."""


@dataclass(frozen=True)
class EncodeConfig:
    tokenizer: TokenizerSpec
    keys: tuple[str, ...] = ("text",)
    mode: Mode = "text"
    append_eod: bool = False
    chat: ChatOptions = field(default_factory=ChatOptions)
    prompt_key: str = "prompt"  # DPO: optional shared prompt prepended to chosen/rejected
    kto_label_key: str = "label"  # KTO: the desirable flag


STAGES = ("read", "parse", "tokenize", "pack")


@dataclass
class ChunkResult:
    arrays: dict[str, np.ndarray]  # output name -> flat tokens
    lengths: dict[str, np.ndarray]  # output name -> document lengths (int64)
    docs: int
    errors: list[tuple[str, str]]  # (location, message)
    nbytes: int
    # a byte-range chunk: its errors' line numbers count from the range's start, and
    # `lines` is how far the next range of `source` starts (see `relocate`)
    source: str = ""
    relative_lines: list[int] | None = None
    lines: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # worker time per stage

    def relocate(self, line_base: int) -> None:
        """Make a range's error locations absolute: `line_base` lines precede the range."""
        if self.relative_lines is not None:
            self.errors = [
                (f"{self.source}:{line_base + n}", msg)
                for n, (_, msg) in zip(self.relative_lines, self.errors, strict=True)
            ]
            self.relative_lines = None


def output_names(config: EncodeConfig) -> list[str]:
    """Dataset names (the part after `<prefix>_` and before `_document`)."""
    names: list[str] = []
    for key in config.keys:
        names.append(key)
        if config.mode != "text":
            names.append(f"{key}_label")
        if config.mode == "kto":
            names.append(f"{key}_reward")
    return names


def output_dtype(config: EncodeConfig, vocab_size: int) -> np.dtype:
    """Token rule for text; int32 for chat tokens and labels (GPT-NeoX's chat script)."""
    return best_fitting_dtype(vocab_size) if config.mode == "text" else np.dtype(np.int32)


class Encoder:
    def __init__(self, config: EncodeConfig, tokenizer: Tokenizer | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer or build_tokenizer(config.tokenizer)
        self.dtype = output_dtype(config, self.tokenizer.vocab_size)
        self.names = output_names(config)
        self._chat: ChatEncoder | None = None
        if config.mode != "text":
            self._chat = ChatEncoder(self.tokenizer, config.chat)
        if config.append_eod and config.mode != "text":
            raise ValueError(
                "--append-eod applies to text mode; chat modes end each chat with EOS already"
            )
        if config.append_eod and self.tokenizer.eod is None:
            raise ValueError(
                f"--append-eod: tokenizer {self.tokenizer.name} has no <|endoftext|> token; "
                "name one with --eod-token"
            )

    # -- record decoding -----------------------------------------------------------------
    def _record(self, chunk: Chunk, item: Any) -> Any:
        if chunk.kind == "jsonl":
            try:
                line = item.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"invalid UTF-8 at byte {e.start} of the line") from e
            try:
                return json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"malformed JSON: {e.msg} (column {e.colno})") from e
        if chunk.kind == "text":
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError as e:
                lineno = item.count(b"\n", 0, e.start) + 1
                raise RecordError(f"invalid UTF-8 at byte {e.start} (line {lineno})") from e
            return {"text": text}
        return item

    def _field(self, record: Any, key: str) -> Any:
        if not isinstance(record, dict):
            raise RecordError(f"expected a JSON object, got {type(record).__name__}")
        if key not in record:
            raise RecordError(f"missing key {key!r} (keys: {', '.join(map(str, record))})")
        return record[key]

    def _text(self, record: Any, key: str) -> str:
        value = self._field(record, key)
        if not isinstance(value, str):
            raise RecordError(f"key {key!r} holds {type(value).__name__}, not a string")
        if not value:
            raise RecordError(f"empty document under key {key!r}")
        problem = utf8_problem(value)
        if problem is not None:
            raise RecordError(f"key {key!r}: {problem}")
        return value

    # -- encoding ------------------------------------------------------------------------
    def encode_chunk(self, chunk: Chunk) -> ChunkResult:
        seconds = dict.fromkeys(STAGES, 0.0)
        ranged = chunk.byte_range is not None
        if ranged:
            t = time.perf_counter()
            chunk = load_range(chunk)
            seconds["read"] = time.perf_counter() - t
        if self.config.mode == "text":
            res = self._encode_text(chunk, seconds)
        else:
            res = self._encode_chat(chunk, seconds)
        res.seconds = seconds
        res.source = chunk.source
        if ranged:
            res.lines = chunk.lines
            res.relative_lines = [int(loc.rsplit(":", 1)[1]) for loc, _ in res.errors]
        return res

    def _encode_text(self, chunk: Chunk, seconds: dict[str, float]) -> ChunkResult:
        keys = self.config.keys
        errors: list[tuple[str, str]] = []
        texts: dict[str, list[str]] = {k: [] for k in keys}
        t = time.perf_counter()
        for i, item in enumerate(chunk.items):
            try:
                record = self._record(chunk, item)
                values = [self._text(record, k) for k in keys]
            except RecordError as e:
                errors.append((chunk.location(i), str(e)))
                continue
            for k, v in zip(keys, values, strict=True):
                texts[k].append(v)
        seconds["parse"] += time.perf_counter() - t
        arrays, lengths = {}, {}
        eod = self.tokenizer.eod if self.config.append_eod else None
        for k in keys:
            t = time.perf_counter()
            ids = self.tokenizer.encode_batch(texts[k]) if texts[k] else []
            t2 = time.perf_counter()
            if eod is not None:
                for seq in ids:
                    seq.append(eod)
            arrays[k], lengths[k] = _flatten(ids, self.dtype)
            seconds["tokenize"] += t2 - t
            seconds["pack"] += time.perf_counter() - t2
        docs = len(texts[keys[0]])
        return ChunkResult(arrays, lengths, docs, errors, chunk.nbytes)

    def _conversation(self, record: Any, key: str) -> list[dict[str, Any]]:
        messages = self._field(record, key)
        if (
            self.config.mode == "dpo"
            and isinstance(record, dict)
            and self.config.prompt_key in record
        ):
            prompt = record[self.config.prompt_key]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if isinstance(messages, str):
                messages = [{"role": self.config.chat.generation_role, "content": messages}]
            try:
                check_messages(prompt)
            except ChatFormatError as e:
                raise RecordError(f"key {self.config.prompt_key!r}: {e}") from e
            messages = [*prompt, *messages] if isinstance(messages, list) else messages
        try:
            check_messages(messages)
        except ChatFormatError as e:
            raise RecordError(f"key {key!r}: {e}") from e
        return messages

    def _desirable(self, record: Any) -> int:
        flag = self._field(record, self.config.kto_label_key)
        if not isinstance(flag, bool):
            raise RecordError(
                f"key {self.config.kto_label_key!r} holds {type(flag).__name__}, not a boolean"
            )
        return 1 if flag else -1

    def _encode_chat(self, chunk: Chunk, seconds: dict[str, float]) -> ChunkResult:
        """Chats are rendered and tokenized one by one: "tokenize" holds both."""
        assert self._chat is not None
        keys = self.config.keys
        errors: list[tuple[str, str]] = []
        seqs: dict[str, list[list[int]]] = {n: [] for n in self.names}
        start = time.perf_counter()
        parse = 0.0
        for i, item in enumerate(chunk.items):
            try:
                t = time.perf_counter()
                try:
                    record = self._record(chunk, item)
                finally:
                    parse += time.perf_counter() - t
                encoded = []
                for k in keys:
                    try:
                        encoded.append(self._chat.encode(self._conversation(record, k)))
                    except ChatFormatError as e:
                        raise RecordError(f"key {k!r}: {e}") from e
                reward = self._desirable(record) if self.config.mode == "kto" else 0
            except RecordError as e:
                errors.append((chunk.location(i), str(e)))
                continue
            for k, (tokens, labels) in zip(keys, encoded, strict=True):
                seqs[k].append(tokens)
                seqs[f"{k}_label"].append(labels)
                if self.config.mode == "kto":
                    seqs[f"{k}_reward"].append([reward] * len(tokens))
        t = time.perf_counter()
        seconds["parse"] += parse
        seconds["tokenize"] += t - start - parse
        arrays, lengths = {}, {}
        for n in self.names:
            arrays[n], lengths[n] = _flatten(seqs[n], self.dtype)
        seconds["pack"] += time.perf_counter() - t
        docs = len(seqs[keys[0]])
        return ChunkResult(arrays, lengths, docs, errors, chunk.nbytes)


def _flatten(seqs: list[list[int]], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=dtype), lengths
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=total)
    return flat.astype(dtype, copy=False), lengths


def chat_mode_for(keys: tuple[str, ...]) -> Mode:
    """`auto` mode: chat for GPT-NeoX's conversation keys, text otherwise."""
    return "chat" if all(k in CHAT_KEYS for k in keys) else "text"
