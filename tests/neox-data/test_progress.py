"""Plain progress lines when stderr is not a terminal."""

from __future__ import annotations

import io

from neox_data.progress import Progress


def test_plain_lines_carry_rates_and_eta() -> None:
    out = io.StringIO()  # not a TTY: no tqdm bar
    p = Progress(total_docs=100, interval_s=0.0, stream=out)
    p.update(docs=25, tokens=1000, nbytes=4096)
    p.close()
    line = out.getvalue().strip()
    assert line.startswith("processed 25/100 documents, 1,000 tokens")
    assert "docs/s" in line and "tokens/s" in line and "MB/s" in line and "ETA" in line


def test_lines_are_rate_limited() -> None:
    out = io.StringIO()
    p = Progress(total_docs=None, interval_s=3600.0, stream=out)
    for _ in range(50):
        p.update(docs=1, tokens=10, nbytes=10)
    assert out.getvalue() == ""
    assert p.docs == 50 and p.tokens == 500
