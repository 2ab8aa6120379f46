"""Progress of a tokenization: a tqdm bar on a terminal, plain periodic lines in logs."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(
        self, total_docs: int | None, interval_s: float = 30.0, stream: TextIO | None = None
    ) -> None:
        self._stream = stream or sys.stderr
        self._total = total_docs
        self._interval = interval_s
        self._start = self._last = time.monotonic()
        self.docs = self.tokens = self.nbytes = 0
        self._bar: Any = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_docs, unit="doc", file=self._stream, dynamic_ncols=True)

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        self.nbytes += nbytes
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(docs)
            elapsed = max(now - self._start, 1e-9)
            self._bar.set_postfix(tok_s=f"{self.tokens / elapsed:,.0f}", refresh=False)
        elif now - self._last >= self._interval:
            self._last = now
            print(self.line(), file=self._stream, flush=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        docs_s, tok_s = self.docs / elapsed, self.tokens / elapsed
        total = f"/{self._total}" if self._total else ""
        eta = ""
        if self._total and docs_s > 0 and self.docs < self._total:
            eta = f", ETA {(self._total - self.docs) / docs_s:,.0f} s"
        return (
            f"processed {self.docs}{total} documents, {self.tokens:,} tokens in {elapsed:,.1f} s "
            f"({docs_s:,.1f} docs/s, {tok_s:,.0f} tokens/s, "
            f"{self.nbytes / elapsed / 2**20:,.2f} MB/s{eta})"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
