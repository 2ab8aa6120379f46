"""The upload state file: what each `repo@revision` target has reached, so a rerun continues.

Written atomically (temporary sibling, fsync, rename) after every change, so a crash or a kill
leaves the previous complete version. It holds repository names, revisions, commit ids, file
checksums and the last error, never the token.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from neox_ckpt.errors import ConversionError

STATE_VERSION = 1


def atomic_write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` through a temporary sibling, fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class UploadState:
    """`targets["<repo>@<revision>"]` -> status (pending/done/failed), commit, files, error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": STATE_VERSION, "names": {}, "targets": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ConversionError(
                    f"state file {path}: unreadable ({e}); move it away"
                ) from None
            if not isinstance(loaded, dict) or loaded.get("version") != STATE_VERSION:
                raise ConversionError(f"state file {path}: not a version {STATE_VERSION} state")
            self.data = loaded

    @staticmethod
    def key(repo_id: str, revision: str) -> str:
        return f"{repo_id}@{revision}"

    def target(self, repo_id: str, revision: str) -> dict[str, Any]:
        return self.data["targets"].get(self.key(repo_id, revision), {})

    def update(self, repo_id: str, revision: str, **fields: Any) -> None:
        entry = self.data["targets"].setdefault(self.key(repo_id, revision), {})
        entry.update(fields, updated_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.save()

    def set_names(self, names: dict[str, Any]) -> None:
        self.data["names"] = names
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


__all__ = ["UploadState", "atomic_write_json"]
