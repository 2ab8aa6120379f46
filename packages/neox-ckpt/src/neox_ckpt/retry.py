"""Exponential backoff with jitter around whole Hub operations, honouring `Retry-After`.

huggingface_hub already retries single requests a few times (seconds apart); the Hub's rate
limits last minutes to hours, so a whole step (list, compare, commit) is retried here on
HTTP 408, 429 and 5xx and on dropped connections. Each attempt re-reads the remote state, so
a commit whose response was lost is not committed twice.

Wait before retry k (k = 0, 1, ...): `lo = min(max_wait, min_wait * 2**k)`, drawn uniformly from
`[lo, min(max_wait, 2 * lo)]` (from `[0.75 * max_wait, max_wait]` once capped), and never
shorter than the server's `Retry-After` (or `RateLimit` reset) when it sends one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger("neox_ckpt.upload")
T = TypeVar("T")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class RetryPolicy:
    max_retries: int = 20
    min_wait: float = 120.0
    max_wait: float = 3600.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def wait(self, attempt: int, server_hint: float | None) -> float:
        lo = min(self.max_wait, self.min_wait * 2**attempt)
        hi = min(self.max_wait, 2 * lo)
        if hi <= lo:
            lo = max(self.min_wait, 0.75 * self.max_wait)
        wait = self.rng.uniform(lo, hi)
        return max(wait, server_hint) if server_hint is not None else wait


def _causes(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _server_hint(response: object) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    try:  # the Hub's `RateLimit` header, parsed by huggingface_hub itself
        from huggingface_hub.utils._http import parse_ratelimit_headers

        info = parse_ratelimit_headers(headers)
    except Exception:  # an older or newer huggingface_hub without it
        return None
    if info is not None and info.remaining == 0:
        return float(info.reset_in_seconds)
    return None


def classify(exc: BaseException) -> tuple[bool, float | None, str]:
    """(retryable, server-requested wait in seconds, short reason) for an exception."""
    from huggingface_hub.errors import HfHubHTTPError

    for e in _causes(exc):
        if isinstance(e, HfHubHTTPError) and getattr(e, "response", None) is not None:
            status = e.response.status_code
            if status in RETRY_STATUS or 500 <= status < 600:
                return True, _server_hint(e.response), f"HTTP {status}"
            return False, None, f"HTTP {status}"
    for e in _causes(exc):
        mod = type(e).__module__.split(".")[0]
        if mod.startswith("httpx") or mod in ("httpcore", "urllib3", "requests"):
            return True, None, f"connection error ({type(e).__name__})"
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True, None, f"connection error ({type(e).__name__})"
    return False, None, type(exc).__name__


def with_retries(what: str, fn: Callable[[], T], policy: RetryPolicy) -> T:
    """Call `fn` until it succeeds, retrying transient Hub failures per `policy`."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            retryable, hint, reason = classify(exc)
            if not retryable or attempt >= policy.max_retries:
                raise
            wait = policy.wait(attempt, hint)
            attempt += 1
            log.warning(
                "%s: %s; retry %d/%d in %.1f s%s",
                what,
                reason,
                attempt,
                policy.max_retries,
                wait,
                f" (server asked for {hint:.0f} s)" if hint is not None else "",
            )
            policy.sleep(wait)


__all__ = ["RETRY_STATUS", "RetryPolicy", "classify", "with_retries"]
