"""GPT-NeoX vocabulary keys that make neox-core derive exactly the stored embedding rows.

neox-core (like GPT-NeoX) computes the embedding size from the tokenizer: its size padded up
to a multiple of `make_vocab_size_divisible_by` x TP. A converted checkpoint has a fixed
number of rows (HF's `vocab_size`, often already padded: Pythia stores 50304 rows for a
50277-token tokenizer), so the YAML states `padded-vocab-size` and picks a divisor under which
the tokenizer's size pads to exactly those rows, at the checkpoint's TP and at TP 1.
"""

from __future__ import annotations

_DIVISORS = (128, 64, 32, 16, 8, 4, 2, 1)


def vocab_keys(rows: int, tp: int, tokenizer_size: int | None) -> dict[str, int] | None:
    """`padded_vocab_size` and `make_vocab_size_divisible_by`, or None if the tokenizer's size
    cannot pad to `rows` (more tokens than rows, or too few for any divisor)."""
    for d in (*_DIVISORS, rows // tp):
        if d < 1 or rows % (d * tp):
            continue
        if tokenizer_size is not None and not rows - d < tokenizer_size <= rows:
            continue
        return {"padded_vocab_size": rows, "make_vocab_size_divisible_by": d}
    return None
