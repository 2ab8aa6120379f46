"""GPT-NeoX's generation modes on text: unconditional, from an input file, interactive.

Each sample becomes a record with GPT-NeoX's fields (`context`, `text`, `length`, `finished`,
`message`, `duration_seconds`); a file of them is written whole or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from neox_core.generation.generate import generate
from neox_core.generation.sampling import SamplingParams
from neox_core.generation.step import DecodeStep


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file and line."""


@dataclass
class Sample:
    context: str
    text: str
    length: int  # generated tokens
    finished: bool  # ended by the end-of-document token or a stop string
    message: str | None
    duration_seconds: float

    def record(self) -> dict[str, Any]:
        return asdict(self)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TextGenerator:
    """Text in, text out around `generate`: tokenizing, context limits, stop strings, timing."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int,
        params: SamplingParams,
        max_length: int,
        seed: int,
        batch_size: int = 1,
        stop_strings: Sequence[str] = (),
        recompute: bool = False,
        compile: bool | None = None,
    ) -> None:
        """`compile`: compile the decode step (None: yes on CUDA, no on CPU)."""
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.params = params
        self.max_length = max_length
        self.seed = seed
        self.batch_size = batch_size
        self.stop_strings = [s for s in stop_strings if s]
        self.recompute = recompute
        self.calls = 0
        # one decode step for every call: its caches and compiled graphs are reused
        self.step = DecodeStep(model, compile)

    def complete(
        self, contexts: Sequence[str], stops: Sequence[Sequence[str]] | None = None
    ) -> list[Sample]:
        """One sample per context ("" = unconditional: the model starts after the eod token).

        `stops` gives each context its own stop strings (in addition to `stop_strings`).
        """
        tok, eod = self.tokenizer, self.tokenizer.eod
        started = time.perf_counter()
        encoded = [tok.encode(c) if c else [] for c in contexts]
        per_row_stops = [
            self.stop_strings + list(stops[i] if stops else []) for i in range(len(contexts))
        ]
        runnable, messages = [], [None] * len(contexts)
        for i, ids in enumerate(encoded):
            if not ids:
                if eod is None:
                    raise ValueError("unconditional generation needs a tokenizer with an eod")
                encoded[i] = ids = [eod]
            if len(ids) >= self.max_length:
                messages[i] = (
                    f"WARNING: the context has {len(ids)} tokens, at least seq_length "
                    f"({self.max_length}); nothing was generated"
                )
            else:
                runnable.append(i)
        limits = [min(self.max_new_tokens, self.max_length - len(encoded[i])) for i in runnable]

        def stop_check(j: int, toks: list[int]) -> bool:
            row_stops = per_row_stops[runnable[j]]
            return bool(row_stops) and cut_at_stop(tok.decode(toks), row_stops)[1]

        # a new seed per call keeps interactive prompts independent yet reproducible
        results = generate(
            self.model,
            [encoded[i] for i in runnable],
            max_new_tokens=max(limits, default=1),
            params=self.params,
            eos_id=eod,
            seed=self.seed + self.calls,
            batch_size=self.batch_size,
            stop_check=stop_check,
            recompute=self.recompute,
            pad_id=eod if eod is not None else 0,
            limits=limits,
            step=self.step,
        )
        self.calls += 1
        duration = (time.perf_counter() - started) / max(1, len(contexts))
        samples = [
            Sample(c, "", 0, False, m, duration) for c, m in zip(contexts, messages, strict=True)
        ]
        for k, (j, res) in enumerate(zip(runnable, results, strict=True)):
            text, stopped = cut_at_stop(tok.decode(res.tokens), per_row_stops[j])
            s = samples[j]
            s.text, s.length, s.finished = text, len(res.tokens), res.finished or stopped
            if not s.finished and s.length == limits[k] < self.max_new_tokens:
                s.message = f"stopped at seq_length ({self.max_length} tokens)"
        return samples


def read_prompts(path: str | Path, prompt_end: str) -> list[str]:
    """Prompts of a file: split at `prompt_end` (GPT-NeoX), or the `text` of each JSONL record.

    Prompts are stripped and empty ones dropped, as GPT-NeoX does.
    """
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"sample_input_file {p} does not exist") from None
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{p}: not UTF-8 text ({e})") from None
    if p.suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise PromptFileError(f"{p}:{n}: expected an object with a string 'text' key")
            prompts.append(record["text"])
    else:
        if not prompt_end:
            raise PromptFileError("prompt_end must not be empty")
        prompts = raw.split(prompt_end)
    return [s for s in (q.strip() for q in prompts) if s]


def write_samples(path: str | Path, samples: Iterable[Sample]) -> None:
    """JSONL, one record per sample; written to a temporary file, synced, then renamed."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(s.record(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def interactive(generator: TextGenerator, stdin: TextIO, stdout: TextIO) -> int:
    """GPT-NeoX's interactive mode: read a prompt, print the continuation, until EOF or 'exit'."""
    count = 0
    while True:
        stdout.write("Please enter prompt (or 'exit' to quit): ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "exit":
            stdout.write("\n")
            return count
        prompt = line.rstrip("\n")
        sample = generator.complete([prompt])[0]
        if sample.message:
            stdout.write(f"{sample.message}\n")
        stdout.write(f"Generated Text: {sample.text}\n")
        stdout.flush()
        count += 1
