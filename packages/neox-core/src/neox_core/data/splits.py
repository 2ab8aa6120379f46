"""Which documents of one `data_path` go to train, valid and test (GPT-NeoX's `split`)."""

from __future__ import annotations


def split_boundaries(split: str, num_docs: int) -> list[int]:
    """Document boundaries [0, a, b, num_docs] from a `split` string like "969, 30, 1".

    Same arithmetic as GPT-NeoX's `get_train_valid_test_split_` (normalise, round each part,
    shift so the last boundary is num_docs), so the same documents land in the same split.
    """
    sep = "," if "," in split else "/" if "/" in split else None
    try:
        parts = [float(s) for s in (split.split(sep) if sep else [split])]
    except ValueError:
        raise ValueError(f"split {split!r}: expected numbers like '969, 30, 1'") from None
    parts = [*parts, 0.0, 0.0][:3]
    total = sum(parts)
    if total <= 0 or any(p < 0 for p in parts):
        raise ValueError(f"split {split!r}: parts must be >= 0 and sum to more than 0")
    bounds = [0]
    for p in parts:
        bounds.append(bounds[-1] + round(p / total * float(num_docs)))
    diff = bounds[-1] - num_docs
    bounds = [bounds[0]] + [b - diff for b in bounds[1:]]
    return bounds


def num_samples_per_split(
    train_iters: int, eval_interval: int, eval_iters: int, train_batch_size: int
) -> tuple[int, int, int]:
    """Samples each split must supply over the run (GPT-NeoX's arithmetic)."""
    valid_iters = (train_iters // eval_interval + 1) * eval_iters if eval_interval else eval_iters
    return (
        train_iters * train_batch_size,
        valid_iters * train_batch_size,
        eval_iters * train_batch_size,
    )
