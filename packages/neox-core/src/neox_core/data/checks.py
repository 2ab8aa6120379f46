"""Start-up checks of every data path, so a damaged dataset stops the run before any step.

A truncated `.bin` (an interrupted copy, a full disk) would otherwise be found only when a
sample first reads past its end, possibly hours in and inside a DataLoader worker. The checks
are neox-data's structural ones (header, index arrays, `.bin` size; no token is read);
`neox-data verify --tokenizer ...` adds the token scan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from neox_data.verify import check_structure


class DataCheckError(ValueError):
    """A data path whose files are missing or inconsistent; the message is one line."""


def data_paths(section: Any) -> Iterator[tuple[str, str]]:
    """(config key, prefix) for every `*data_path` / `*data_paths` field of a config section."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if not value or not f.name.endswith(("data_path", "data_paths")):
            continue
        for prefix in [value] if isinstance(value, str) else value:
            yield f.name, str(prefix)


def check_data_paths(*sections: Any) -> None:
    """Raise DataCheckError naming the key and file of the first damaged dataset."""
    seen: set[str] = set()
    for section in sections:
        for key, prefix in data_paths(section):
            if prefix in seen:
                continue
            seen.add(prefix)
            problems = check_structure(prefix)
            if not problems:
                continue
            more = (
                f" (and {len(problems) - 1} more: neox-data verify {prefix})"
                if len(problems) > 1
                else ""
            )
            hint = " (paths are relative to CWD)" if "file not found" in problems[0] else ""
            raise DataCheckError(f"{key}: {problems[0]}{more}{hint}")
