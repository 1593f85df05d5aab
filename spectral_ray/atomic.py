"""Crash-safe file writes shared by the dataset cache, backbone files and the store's metadata."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """Yield a temporary file beside ``path``; on success it is flushed, fsynced and renamed over
    ``path`` (atomic on POSIX), on any error it is removed. A crash mid-write therefore leaves only
    a ``*.tmp`` file that readers never open."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_dict(path: str | os.PathLike) -> dict | None:
    """The JSON object stored at ``path``, or None when the file is missing, unreadable, not JSON
    or not an object: the readers of metadata and lock files treat all of those as "absent"."""
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None
