"""Crash-safe file primitives: every file is written to a temporary name, fsynced, renamed.

A checkpoint directory is only ever seen under its final name once all of its files are on
disk, and `latest` only ever names such a directory.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Persist a directory's entries (new names, renames) on POSIX filesystems."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Run `writer(tmp_path)`, fsync the result and rename it onto `path` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write_with(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_tree(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
