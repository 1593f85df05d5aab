"""What the real-data readers share: path checks, image decoding and conversion to
``(C, size, size)`` float32 in [0, 1], CSV parsing, seeded stratified subsets and the cache of
decoded arrays keyed by the input files' size and mtime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from skimage.color import rgb2gray

from spectral_ray.data import registry
from spectral_ray.data.dataset import ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".webp", ".npy")
# In-memory limit for the registry builders: n * C * size**2 * 4 bytes. 2048 MB holds e.g.
# 10 000 grayscale images at 224 px, or 130 000 at 64 px. Larger sets: FolderImageDataset.
MAX_MEMORY_MB = 2048


def require_path(value, param: str, reader: str, *, kind: str = "any") -> Path:
    """``value`` as an existing path (``kind``: ``"dir"``, ``"file"`` or ``"any"``), or an error
    naming ``reader`` and ``param``."""
    if value in (None, ""):
        raise ValueError(f"{reader}: parameter '{param}' is required (a path); see docs/REAL_DATA.md")
    p = Path(value).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{reader}: {param} not found: {p}")
    if kind == "dir" and not p.is_dir():
        raise NotADirectoryError(f"{reader}: {param} must be a folder: {p}")
    if kind == "file" and not p.is_file():
        raise FileNotFoundError(f"{reader}: {param} must be a file: {p}")
    return p


def check_memory(n: int, channels: int, size: int, max_memory_mb, reader: str, hint: str) -> None:
    """``MemoryError`` (with ``hint``) when n float32 images of C×size² exceed ``max_memory_mb``."""
    if max_memory_mb is None:
        return
    mb = n * channels * size * size * 4 / 2**20
    if mb > max_memory_mb:
        raise MemoryError(
            f"{reader}: {n} images of {channels}x{size}x{size} need {mb:.0f} MB in memory, over "
            f"max_memory_mb={max_memory_mb}. {hint}"
        )


def stratified_choice(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` items, allocated to classes in proportion to their counts."""
    total = len(labels)
    if n >= total:
        return np.arange(total)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / total
    quota = np.floor(exact).astype(int)
    rest = n - quota.sum()
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:rest]] += 1
    picked = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=q, replace=False))
    return np.sort(np.concatenate(picked))


def resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased bicubic resize of a float32 2-D array (PIL mode 'F', no 8-bit quantisation)."""
    if plane.shape == (size, size):
        return plane.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode "F"
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def center_square(hwc: np.ndarray) -> np.ndarray:
    """The central ``min(H, W)`` square of an ``(H, W, c)`` image."""
    h, w = hwc.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return hwc[y0 : y0 + s, x0 : x0 + s]


def finish(hwc: np.ndarray, size: int, channels: int, crop: str = "center") -> np.ndarray:
    """float32 ``(H, W, c)`` (c = 1 or 3) in [0, 1] -> ``(channels, size, size)`` in [0, 1]."""
    if crop == "center":
        hwc = center_square(hwc)
    elif crop != "stretch":
        raise ValueError(f"crop must be 'center' or 'stretch', got {crop!r}")
    c = hwc.shape[2]
    if channels == 1 and c == 3:
        hwc = rgb2gray(hwc)[..., None]
    out = np.stack([resize_plane(hwc[..., k], size) for k in range(hwc.shape[2])])
    if channels == 3 and out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return np.clip(out, 0.0, 1.0, out=out)


def array_to_hwc(arr: np.ndarray, scale: str = "auto", where: str = "") -> np.ndarray:
    """An image array (H,W), (H,W,C) or (C,H,W) of any numeric dtype -> float32 (H,W,1|3) in [0, 1].

    ``scale='auto'``: integers are divided by their dtype's maximum (uint8 / 255, uint16 / 65535),
    floats are taken as already in [0, 1] (clipped); ``'minmax'``: per-image min-max.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{where}: expected an image of shape (H,W), (H,W,C) or (C,H,W) with C in 1/3/4, got {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if scale == "minmax":
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if scale != "auto":
        raise ValueError(f"scale must be 'auto' or 'minmax', got {scale!r}")
    if a.dtype == bool:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def decode_image(path: Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to float32 (H, W, 1|3) in [0, 1]; 8- and 16-bit files are supported."""
    if path.suffix.lower() == ".npy":
        return array_to_hwc(np.load(path, allow_pickle=False), where=str(path))
    try:
        with Image.open(path) as im:
            if size is not None and im.format == "JPEG":
                # Decode large JPEGs at a reduced DCT scale, never below the requested size.
                im.draft("RGB" if im.mode not in ("L", "1") else "L", (size, size))
            mode = im.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                return np.asarray(im, dtype=np.float32)[..., None] / 65535.0
            if mode == "I":
                a = np.asarray(im, dtype=np.float32)
                return (a / (65535.0 if a.max() > 255 else 255.0))[..., None]
            if mode == "F":
                return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)[..., None]
            if mode in ("L", "1"):
                return np.asarray(im.convert("L"), dtype=np.float32)[..., None] / 255.0
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read image {path}: {e}") from e


def load_image(path, size: int, channels: int = 1, crop: str = "center") -> np.ndarray:
    """One image file -> float32 ``(channels, size, size)`` in [0, 1].

    Grayscale becomes 3 identical channels when ``channels=3``; RGB becomes luminance when
    ``channels=1``. ``crop='center'`` takes the central square before resizing (no distortion);
    ``'stretch'`` resizes the whole image.
    """
    return finish(decode_image(Path(path), size), size, channels, crop)


def group_ids(values) -> np.ndarray:
    """Patient ids as int64: integer-valued ids are kept, anything else is numbered (sorted)."""
    import pandas as pd

    s = pd.Series(values)
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all() and np.all(np.asarray(num) == np.round(np.asarray(num))):
        return np.asarray(num, dtype=np.int64)
    codes, _ = pd.factorize(s.astype(str), sort=True)
    return codes.astype(np.int64)


def read_csv(path: Path, required: Sequence[str], reader: str):
    import pandas as pd

    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except Exception as e:  # pandas raises several types for malformed files
        raise ValueError(f"{reader}: cannot parse CSV {path}: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{reader}: {path} is missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"found columns {list(df.columns)}; see docs/REAL_DATA.md"
        )
    for c in required:
        if df[c].isna().any():
            rows = (np.flatnonzero(df[c].isna().to_numpy()) + 2)[:5].tolist()
            raise ValueError(f"{reader}: {path} column {c!r} has empty values (CSV lines {rows})")
    if len(df) == 0:
        raise ValueError(f"{reader}: {path} has no rows")
    return df


def binary_labels(values, path: Path, reader: str, classes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """A CSV ``label`` column -> int64 0/1 and class names.

    Integers must be 0/1. Strings: ``classes=[negative, positive]`` names the order, otherwise the
    two distinct values in sorted order.
    """
    import pandas as pd

    s = pd.Series(values)
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all():
        vals = set(np.unique(num).tolist())
        if not vals <= {0, 1}:
            raise ValueError(f"{reader}: {path} column 'label' must be binary 0/1, found values {sorted(vals)[:10]}")
        names = list(classes) if classes is not None else ["negative", "positive"]
        return np.asarray(num, dtype=np.int64), names
    strs = s.astype(str).str.strip()
    uniq = sorted(set(strs))
    if classes is not None:
        names = [str(c) for c in classes]
        bad = sorted(set(uniq) - set(names))
        if len(names) != 2 or bad:
            raise ValueError(f"{reader}: {path} column 'label' has values {bad or uniq} not in classes={names}")
    else:
        if len(uniq) != 2:
            raise ValueError(f"{reader}: {path} column 'label' must have exactly two values, found {uniq[:10]}")
        names = uniq
    return np.asarray([names.index(v) for v in strs], dtype=np.int64), names


def fingerprint(paths: Iterable[Path]) -> list:
    """(path, size, mtime_ns) of each input file: part of the cache key, so edited files rebuild."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def maybe_cached(name: str, key_params: dict, files: Iterable[Path], use_cache: bool, build: Callable[[], ImageDataset]):
    """``build()``, through the dataset cache when ``use_cache``: keyed by the reader's code version,
    ``key_params`` and the size + mtime of every input file."""
    if not use_cache:
        return build()
    return registry.load_or_build(name, dict(key_params, _inputs=fingerprint(files)), build)


def check_classes_param(classes):
    """``classes`` is None or two names ``[negative, positive]``."""
    if classes is not None and (isinstance(classes, str) or len(classes) != 2):
        raise ValueError(f"classes must be two names [negative, positive], got {classes!r}")


