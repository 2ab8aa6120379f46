"""Backoff waits: exponential, jittered, capped, never shorter than the server's Retry-After."""

from __future__ import annotations

import random

from neox_ckpt.retry import RetryPolicy


def test_waits_grow_exponentially_within_bounds() -> None:
    p = RetryPolicy(max_retries=20, min_wait=120, max_wait=3600, rng=random.Random(0))
    waits = [p.wait(k, None) for k in range(8)]
    for k, w in enumerate(waits):
        lo = min(3600, 120 * 2**k)
        assert min(lo, 0.75 * 3600) <= w <= 3600
    assert waits[0] < waits[3] < 3600 + 1e-9
    assert len({round(p.wait(2, None), 6) for _ in range(10)}) > 1  # jittered


def test_retry_after_is_honoured_even_above_the_cap() -> None:
    p = RetryPolicy(min_wait=1, max_wait=10, rng=random.Random(0))
    assert p.wait(0, 300.0) == 300.0
    assert 1 <= p.wait(0, 0.0) <= 2


def test_upload_delay_values() -> None:
    import pytest

    from neox_ckpt.errors import ConversionError
    from neox_ckpt.hub_upload import RANDOM_DELAY_MAX, parse_delay

    assert parse_delay("90") == 90.0
    draws = {parse_delay("random", random.Random(s)) for s in range(5)}
    assert len(draws) == 5 and all(0 <= d <= RANDOM_DELAY_MAX == 12 * 3600 for d in draws)
    for bad in ("-1", "soon"):
        with pytest.raises(ConversionError, match="--upload-delay"):
            parse_delay(bad)
