"""Any binary task as a target: a CSV ``path,label,patient`` over image files, ``.npy`` arrays
or one ``.npz``; docs/REAL_DATA.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import (MAX_MEMORY_MB, array_to_hwc, binary_labels, check_classes_param,
                                           check_memory, decode_image, finish, group_ids, maybe_cached, read_csv,
                                           require_path, stratified_choice)
from spectral_ray.data.registry import register_dataset

__all__ = ["csv_target"]


SCALES = ("auto", "minmax")


def _check_window(window, scale: str) -> tuple[float, float] | None:
    if scale not in SCALES:
        raise ValueError(f"csv_target: scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if window is None:
        return None
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"csv_target: window must be two numbers [low, high] (e.g. HU [-1000, 400]), got {window!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"csv_target: window must be [low, high] with low < high, got {window!r}")
    if scale != "auto":
        raise ValueError(f"csv_target: give either window (a fixed intensity range) or scale={scale!r}, not both")
    return lo, hi


def _to_hwc(arr: np.ndarray, scale: str, window, where: str) -> np.ndarray:
    """An image array -> ``(H, W, c)`` in [0, 1]: raw values mapped from ``window`` = [low, high]
    (e.g. HU) when given, else by ``scale`` (:func:`~spectral_ray.data.real.common.array_to_hwc`)."""
    if window is None:
        return array_to_hwc(arr, scale, where)
    lo, hi = window
    a = (np.asarray(arr, dtype=np.float32) - lo) / (hi - lo)
    return array_to_hwc(np.clip(a, 0.0, 1.0), "auto", where)


def _rows(csv: Path, classes, n, seed: int):
    """(path references, labels, patient groups, class names) of the CSV, subset to ``n``."""
    df = read_csv(csv, ["path", "label", "patient"], "csv_target")
    labels, names = binary_labels(df["label"], csv, "csv_target", classes)
    groups = group_ids(df["patient"])
    refs = df["path"].astype(str).str.strip().tolist()
    keep = stratified_choice(labels, n, np.random.default_rng([seed, 17])) if n is not None else np.arange(len(labels))
    return [refs[i] for i in keep], labels[keep], groups[keep], names


def _npz_layout(npz_path: Path, refs: list[str], npz_key: str) -> bool:
    """Whether the CSV's references into one ``.npz`` are integer indices into array ``npz_key``
    (True) or one array name per image (False); checked before anything is decoded."""
    with np.load(npz_path, allow_pickle=False) as z:
        keys = set(z.files)
    as_index = all(re.fullmatch(r"\d+", r) for r in refs)
    if as_index and npz_key not in keys:
        raise ValueError(f"csv_target: column 'path' holds indices but {npz_path} has no array {npz_key!r} (arrays: {sorted(keys)[:10]})")
    if not as_index:
        bad = [r for r in refs if r not in keys]
        if bad:
            raise ValueError(f"csv_target: column 'path' names arrays not in {npz_path}: {bad[:5]}")
    return as_index


def _npz_arrays(npz_path: Path, refs: list[str], npz_key: str, as_index: bool):
    """The referenced arrays of one ``.npz``, in CSV order (the stack is read once)."""
    with np.load(npz_path, allow_pickle=False) as z:
        if not as_index:
            for r in refs:
                yield z[r]
            return
        stack = z[npz_key]
        for r in refs:
            if int(r) >= len(stack):
                raise ValueError(f"csv_target: column 'path' index {r} beyond {npz_path}[{npz_key!r}] ({len(stack)} images)")
            yield stack[int(r)]


def _image_paths(refs: list[str], base: Path, csv: Path, window) -> list[Path]:
    paths = []
    for r in refs:
        p = Path(r).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise FileNotFoundError(f"csv_target: image named in {csv} column 'path' not found: {p}")
        if window is not None and p.suffix.lower() != ".npy":
            raise ValueError(f"csv_target: window maps raw array values (.npy, .npz, e.g. HU); {p} is an image file, "
                             "which is scaled by its bit depth — leave window unset or store the image as .npy")
        paths.append(p)
    return paths


def _decode_file(p: Path, size: int, scale: str, window) -> np.ndarray:
    if window is not None:
        return _to_hwc(np.load(p, allow_pickle=False), scale, window, str(p))
    hwc = decode_image(p, size)
    if scale == "minmax":
        lo, hi = float(hwc.min()), float(hwc.max())
        hwc = (hwc - lo) / (hi - lo) if hi > lo else np.zeros_like(hwc)
    return hwc


@register_dataset("csv_target", kind="target", cached=False, paths=["csv"], optional_paths=["root", "npz"])
def csv_target(
    csv=None,
    *,
    root=None,
    npz=None,
    npz_key: str = "images",
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    scale: str = "auto",
    window: Sequence[float] | None = None,
    crop: str = "center",
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = True,
) -> ImageDataset:
    """Any binary task: CSV path,label,patient over an image folder (or .npy files) or one .npz."""
    check_grid(size, channels, n, n_all=True)
    check_classes_param(classes)
    win = _check_window(window, scale)
    csv = require_path(csv, "csv", "csv_target", kind="file")
    refs, labels, groups, names = _rows(csv, classes, n, seed)
    check_memory(len(refs), channels, size, max_memory_mb, "csv_target", "Pass n to take a seeded subset, or raise max_memory_mb.")
    key = dict(csv=str(csv.resolve()), size=size, channels=channels, n=n, seed=seed, npz_key=npz_key,
               classes=None if classes is None else list(classes), scale=scale, crop=crop,
               **({"window": list(win)} if win is not None else {}))

    def dataset(images: np.ndarray) -> ImageDataset:
        return ImageDataset(images=images, labels=labels, classes=list(names), groups=groups)

    if npz not in (None, ""):
        npz_path = require_path(npz, "npz", "csv_target", kind="file")
        key["npz"] = str(npz_path.resolve())
        as_index = _npz_layout(npz_path, refs, npz_key)

        def build() -> ImageDataset:
            images = np.empty((len(refs), channels, size, size), np.float32)
            for i, (r, arr) in enumerate(zip(refs, _npz_arrays(npz_path, refs, npz_key, as_index))):
                images[i] = finish(_to_hwc(arr, scale, win, f"{npz_path}[{r!r}]"), size, channels, crop)
            return dataset(images)

        return maybe_cached("csv_target", key, [csv, npz_path], cache, build)

    base = require_path(root, "root", "csv_target", kind="dir") if root not in (None, "") else csv.parent
    key["root"] = str(base.resolve())
    paths = _image_paths(refs, base, csv, win)

    def build() -> ImageDataset:
        images = np.empty((len(paths), channels, size, size), np.float32)
        for i, p in enumerate(paths):
            images[i] = finish(_decode_file(p, size, scale, win), size, channels, crop)
        return dataset(images)

    return maybe_cached("csv_target", key, [csv] + sorted(set(paths)), cache, build)
