"""Progress bars on stderr for long conversions (silent when stderr is not a terminal)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None, desc: str, unit: str) -> Iterator[T]:
    from tqdm import tqdm

    # NEOX_CKPT_PROGRESS=1 forces bars on (e.g. in batch logs), =0 turns them off
    forced = os.environ.get("NEOX_CKPT_PROGRESS")
    disable = None if forced is None else forced == "0"
    yield from tqdm(items, total=total, desc=desc, unit=unit, disable=disable, leave=False)
