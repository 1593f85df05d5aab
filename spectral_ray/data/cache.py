"""On-disk cache of generated datasets, keyed by name + parameters + code version.

Files are written to a temporary name and renamed into place (atomic on POSIX), and carry a
checksum of their arrays, so a crash mid-write leaves no file that could be loaded; a corrupt
file is deleted and rebuilt. Concurrent builders of the same key serialise on a file lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from spectral_ray.atomic import atomic_open

# Bump on a change of the cache format. Generator changes are caught by code_version(), which
# hashes the source files whose code decides a dataset's arrays.
CODE_VERSION = "2"
GENERATOR_FILES = {
    "natural": ("data/natural.py", "data/arrays.py"),
    "medical": ("data/medical.py", "data/phantoms.py", "data/arrays.py"),
    "ct_lesion": ("data/targets.py", "data/phantoms.py", "data/arrays.py"),
    "mri_knee": ("data/targets.py", "data/phantoms.py", "data/arrays.py"),
}
EDIT_FILES = ("editing.py", "artifacts.py", "families.py")
ENV_VAR = "SPECTRAL_RAY_CACHE"


@lru_cache(maxsize=64)
def code_version(name: str) -> str:
    """CODE_VERSION + a short hash of the source files that generate dataset ``name`` (``NAME+edit``
    adds the editing code), so that editing a generator never lets an old cache — or a backbone
    pretrained on old data — be reused, while unrelated edits keep both."""
    base, _, suffix = name.partition("+")
    files = GENERATOR_FILES.get(base, ()) + (EDIT_FILES if suffix == "edit" else ())
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(CODE_VERSION.encode())
    for rel in files:
        path = root / rel
        h.update(rel.encode() + (path.read_bytes() if path.exists() else b""))
    return f"{CODE_VERSION}-{h.hexdigest()[:12]}"


def cache_dir() -> Path:
    """``$SPECTRAL_RAY_CACHE`` or ``~/.cache/spectral-ray`` (``$XDG_CACHE_HOME`` honoured)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spectral-ray"


def cache_key(name: str, params: dict) -> str:
    blob = json.dumps({"name": name, "params": params, "code": code_version(name)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays + meta (with checksum) to ``path`` atomically."""
    meta = dict(meta, checksum=_checksum(arrays))
    with atomic_open(path) as f:
        np.savez(f, __meta__=np.array(json.dumps(meta, default=str)), **arrays)


def load_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and meta from ``path``, or None when the file is missing, partial or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except (FileNotFoundError, OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if meta.get("checksum") != _checksum(arrays):
        return None
    return arrays, meta


def load_or_build(name: str, params: dict, build: Callable):
    """The cached dataset for (name, params), building and storing it on a miss."""
    from spectral_ray.data.registry import ImageDataset

    path = cache_dir() / f"{name}-{cache_key(name, params)}.npz"

    def from_disk():
        got = load_arrays(path)
        if got is None:
            return None
        arrays, meta = got
        return ImageDataset(
            images=arrays["images"],
            labels=arrays["labels"],
            classes=list(meta["classes"]),
            groups=arrays.get("groups"),
            name=name,
            params=dict(params),
        )

    ds = from_disk()
    if ds is not None:
        return ds
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        ds = from_disk()  # another process may have built it while we waited
        if ds is not None:
            return ds
        path.unlink(missing_ok=True)  # partial or corrupt: rebuild, never load
        ds = build()
        arrays = {"images": ds.images, "labels": ds.labels}
        if ds.groups is not None:
            arrays["groups"] = ds.groups
        save_arrays(path, arrays, {"name": name, "params": params, "classes": ds.classes, "code": code_version(name)})
    return ds
