"""Atomic output directories: everything is written to a hidden sibling, then renamed.

A crash or an error leaves either no output or the previous one, never a half-written
directory under the final name. A non-empty target is refused unless `force` is given.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neox_ckpt.errors import ConversionError
from neox_core.checkpoint.atomic import fsync_dir, fsync_file


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def check_output_dir(path: str | Path, force: bool) -> Path:
    """Refuse a non-empty output directory (or a file in its place) unless `force`."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--output-dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConversionError(
            f"--output-dir {out} is not empty; pass --force to replace its contents"
        )
    return out


@contextmanager
def staged_output(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `path` in one rename."""
    out = check_output_dir(path, force).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if out.exists():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
