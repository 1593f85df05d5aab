"""Real-data readers: ImageNet/RadImageNet class folders, LoDoPaB-CT, KneeMRI and generic CSV targets.

Every reader takes the paths a user writes into a sweep file and returns an
:class:`~spectral_ray.data.registry.ImageDataset` (float32 ``(n, C, size, size)`` in [0, 1], int64
labels, class names, int64 patient ``groups`` for targets), so real data go through the same
degradation protocol and folds as the embedded datasets. The on-disk layouts, CSV formats and
parameters are documented in ``docs/REAL_DATA.md``.

Sources too large for memory stream from disk: :class:`FolderImageDataset` (a
``torch.utils.data.Dataset``) with :func:`make_loader`. The registry builders load a subset into
memory only when it fits in ``max_memory_mb`` (default :data:`MAX_MEMORY_MB`).

Untrusted inputs: KneeMRI pickles load only through :mod:`spectral_ray.safe_pickle`; ``.npz``/
``.npy`` files load with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from spectral_ray.data import cache as _cache
from spectral_ray.data.registry import ImageDataset, register_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_MEMORY_MB",
    "PATH_PARAMS",
    "FolderIndex",
    "FolderImageDataset",
    "scan_image_folder",
    "make_loader",
    "load_image",
    "missing_paths",
    "image_folder",
    "imagenet_folder",
    "radimagenet_folder",
    "lodopab_ct",
    "knee_mri",
    "csv_target",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".webp", ".npy")
# In-memory limit for the registry builders: n * C * size**2 * 4 bytes. 2048 MB holds e.g.
# 10 000 grayscale images at 224 px, or 130 000 at 64 px. Larger sets: FolderImageDataset.
MAX_MEMORY_MB = 2048
LODOPAB_SLICES_PER_FILE = 128
_GRAY = np.array([0.2125, 0.7154, 0.0721], np.float32)  # same weights as the embedded `natural` source

# Parameters of each reader that are paths, and whether they are required (for sweep validation).
PATH_PARAMS: dict[str, dict[str, bool]] = {
    "image_folder": {"root": True},
    "imagenet_folder": {"root": True},
    "radimagenet_folder": {"root": True},
    "lodopab_ct": {"root": True, "labels_csv": True},
    "knee_mri": {"root": True, "metadata_csv": False},
    "csv_target": {"csv": True, "root": False, "npz": False},
}


def missing_paths(name: str, params: dict) -> list[str]:
    """Problems with the path parameters of reader ``name`` (empty when all are present).

    One message per required parameter that is unset and per given path that does not exist, e.g.
    ``"lodopab_ct: labels_csv not found: /data/lodopab/labels.csv"``. For sweep validation: it
    checks existence only, it reads nothing.
    """
    out = []
    for param, required in PATH_PARAMS.get(name, {}).items():
        value = params.get(param)
        if value in (None, ""):
            if required:
                out.append(f"{name}: parameter '{param}' is required (a path); see docs/REAL_DATA.md")
            continue
        p = Path(value).expanduser()
        if not p.exists():
            out.append(f"{name}: {param} not found: {p}")
    return out


# ----------------------------------------------------------------------------- checks and helpers


def _check_common(size: int, channels: int, n) -> None:
    if not isinstance(size, (int, np.integer)) or size < 8 or size % 2:
        raise ValueError(f"size must be an even integer >= 8, got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")


def _require_path(value, param: str, reader: str, *, kind: str = "any") -> Path:
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


def _check_memory(n: int, channels: int, size: int, max_memory_mb, reader: str, hint: str) -> None:
    if max_memory_mb is None:
        return
    mb = n * channels * size * size * 4 / 2**20
    if mb > max_memory_mb:
        raise MemoryError(
            f"{reader}: {n} images of {channels}x{size}x{size} need {mb:.0f} MB in memory, over "
            f"max_memory_mb={max_memory_mb}. {hint}"
        )


def _stratified_choice(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
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


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased bicubic resize of a float32 2-D array (PIL mode 'F', no 8-bit quantisation)."""
    if plane.shape == (size, size):
        return plane.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode "F"
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _center_square(hwc: np.ndarray) -> np.ndarray:
    h, w = hwc.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return hwc[y0 : y0 + s, x0 : x0 + s]


def _finish(hwc: np.ndarray, size: int, channels: int, crop: str = "center") -> np.ndarray:
    """float32 ``(H, W, c)`` (c = 1 or 3) in [0, 1] -> ``(channels, size, size)`` in [0, 1]."""
    if crop == "center":
        hwc = _center_square(hwc)
    elif crop != "stretch":
        raise ValueError(f"crop must be 'center' or 'stretch', got {crop!r}")
    c = hwc.shape[2]
    if channels == 1 and c == 3:
        hwc = (hwc @ _GRAY)[..., None]
    out = np.stack([_resize_plane(hwc[..., k], size) for k in range(hwc.shape[2])])
    if channels == 3 and out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return np.clip(out, 0.0, 1.0, out=out)


def _array_to_hwc(arr: np.ndarray, scale: str = "auto", where: str = "") -> np.ndarray:
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


def _decode_image(path: Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to float32 (H, W, 1|3) in [0, 1]; 8- and 16-bit files are supported."""
    if path.suffix.lower() == ".npy":
        return _array_to_hwc(np.load(path, allow_pickle=False), where=str(path))
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
    return _finish(_decode_image(Path(path), size), size, channels, crop)


def _group_ids(values) -> np.ndarray:
    """Patient ids as int64: integer-valued ids are kept, anything else is numbered (sorted)."""
    import pandas as pd

    s = pd.Series(values)
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all() and np.all(np.asarray(num) == np.round(np.asarray(num))):
        return np.asarray(num, dtype=np.int64)
    codes, _ = pd.factorize(s.astype(str), sort=True)
    return codes.astype(np.int64)


def _read_csv(path: Path, required: Sequence[str], reader: str):
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


def _binary_labels(values, path: Path, reader: str, classes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
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


def _fingerprint(paths: Iterable[Path]) -> list:
    """(path, size, mtime_ns) of each input file: part of the cache key, so edited files rebuild."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def _maybe_cached(name: str, key_params: dict, files: Iterable[Path], use_cache: bool, build: Callable[[], ImageDataset]):
    if not use_cache:
        return build()
    return _cache.load_or_build(name, dict(key_params, _inputs=_fingerprint(files)), build)


def _check_classes_param(classes):
    if classes is not None and (isinstance(classes, str) or len(classes) != 2):
        raise ValueError(f"classes must be two names [negative, positive], got {classes!r}")


# ----------------------------------------------------------------------------- class folders


@dataclass
class FolderIndex:
    """The selected files of a class-folder dataset: ``paths[i]`` has label ``labels[i]``."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _image_files(folder: Path, extensions: Sequence[str], recursive: bool) -> list[Path]:
    exts = {e.lower() for e in extensions}
    if recursive:
        files = [Path(d) / f for d, _, fs in os.walk(folder) for f in fs]
    else:
        files = [Path(e.path) for e in os.scandir(folder) if e.is_file()]
    return sorted(f for f in files if f.suffix.lower() in exts and not f.name.startswith("."))


def scan_image_folder(
    root,
    *,
    layout: str = "flat",
    per_class: int | None = None,
    n: int | None = None,
    seed: int = 0,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> FolderIndex:
    """Index a class-folder dataset and pick a seeded subset.

    ``layout='flat'`` (ImageNet): each sub-folder of ``root`` is a class (images found recursively
    inside it), named by the folder (e.g. ``n01440764``). ``layout='nested'`` (RadImageNet): every
    folder that directly holds images is a class, named by its path below ``root`` with ``/``
    replaced by ``-`` (``CT/lung/nodule`` -> ``CT-lung-nodule``). Classes are sorted by name.

    ``per_class`` keeps at most that many images per class (seeded choice); ``n`` then keeps ``n``
    images in total, allocated to classes in proportion to their counts. The selection depends only
    on the file names, ``seed``, ``per_class`` and ``n``.
    """
    root = _require_path(root, "root", "image_folder", kind="dir")
    if layout not in ("flat", "nested"):
        raise ValueError(f"layout must be 'flat' (ImageNet) or 'nested' (RadImageNet), got {layout!r}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
    groups: dict[str, list[Path]] = {}
    if layout == "flat":
        class_dirs = sorted(Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not class_dirs:
            raise ValueError(f"image_folder: no class folders in {root} (layout='flat' expects root/<class>/<image>)")
        for d in class_dirs:
            files = _image_files(d, extensions, recursive=True)
            if not files:
                raise ValueError(f"image_folder: class folder {d} holds no images ({', '.join(extensions)})")
            groups[d.name] = files
    else:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            d = Path(dirpath)
            files = _image_files(d, extensions, recursive=False)
            if files:
                if d == root:
                    raise ValueError(f"image_folder: images directly in {root}; layout='nested' expects root/<modality>/<anatomy>/<class>/<image>")
                groups["-".join(d.relative_to(root).parts)] = files
            elif not dirnames and d != root:
                raise ValueError(f"image_folder: folder {d} holds no images ({', '.join(extensions)})")
        if not groups:
            raise ValueError(f"image_folder: no images found under {root}")
    classes = sorted(groups)
    rng = np.random.default_rng([seed, 7])
    paths, labels = [], []
    for k, c in enumerate(classes):
        files = groups[c]
        if per_class is not None and len(files) > per_class:
            files = [files[i] for i in np.sort(rng.choice(len(files), size=per_class, replace=False))]
        paths += files
        labels += [k] * len(files)
    labels = np.asarray(labels, np.int64)
    if n is not None and n < len(paths):
        keep = _stratified_choice(labels, n, rng)
        paths, labels = [paths[i] for i in keep], labels[keep]
    return FolderIndex(root=root, paths=paths, labels=labels, classes=classes)


class FolderImageDataset(torch.utils.data.Dataset):
    """Streams a class-folder dataset from disk: ``ds[i] -> (float32 tensor (C, size, size), label)``.

    Same parameters and selection as :func:`scan_image_folder` / the ``image_folder`` registry
    entry, so the in-memory and streaming paths see the same images. ``transform`` (optional) maps
    the ``(C, size, size)`` numpy image to another, e.g. a source edit.
    """

    def __init__(
        self,
        root,
        *,
        layout: str = "flat",
        size: int = 64,
        channels: int = 1,
        per_class: int | None = None,
        n: int | None = None,
        seed: int = 0,
        crop: str = "center",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        index: FolderIndex | None = None,
    ):
        _check_common(size, channels, n)
        if crop not in ("center", "stretch"):
            raise ValueError(f"crop must be 'center' or 'stretch', got {crop!r}")
        self.index = index or scan_image_folder(root, layout=layout, per_class=per_class, n=n, seed=seed, extensions=extensions)
        self.size, self.channels, self.crop, self.transform = size, channels, crop, transform

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def labels(self) -> np.ndarray:
        return self.index.labels

    @property
    def paths(self) -> list[Path]:
        return self.index.paths

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 numpy ``(C, size, size)`` in [0, 1] (before ``transform``)."""
        return load_image(self.index.paths[i], self.size, self.channels, self.crop)

    def __getitem__(self, i: int):
        x = self.load(i)
        if self.transform is not None:
            x = self.transform(x)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.index.labels[i])


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    np.random.seed((info.seed + worker_id) % 2**32)
    torch.set_num_threads(1)


def make_loader(
    dataset,
    *,
    batch_size: int = 64,
    shuffle: bool = True,
    num_workers: int | None = None,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    prefetch_factor: int | None = 2,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over a :class:`FolderImageDataset` (or any map-style dataset).

    ``num_workers=None`` uses ``min(8, cpus - 1)`` decoding processes (0 on a single CPU); the
    shuffle order is seeded by ``seed``; workers run one torch thread each.
    """
    if num_workers is None:
        num_workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    kwargs = {}
    if num_workers > 0:
        kwargs = dict(worker_init_fn=_worker_init, persistent_workers=False, prefetch_factor=prefetch_factor)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=gen,
        drop_last=drop_last,
        pin_memory=pin_memory,
        **kwargs,
    )


@register_dataset("image_folder", kind="source", cached=False)
def image_folder(
    root=None,
    *,
    layout: str = "flat",
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    crop: str = "center",
    num_workers: int = 0,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = False,
) -> ImageDataset:
    """Class folders (ImageNet `flat` or RadImageNet `nested` layout) read into memory."""
    _check_common(size, channels, n)
    ds = FolderImageDataset(root, layout=layout, size=size, channels=channels, per_class=per_class, n=n, seed=seed, crop=crop)
    _check_memory(
        len(ds), channels, size, max_memory_mb, "image_folder",
        "Lower per_class or n, raise max_memory_mb, or stream with "
        "spectral_ray.data.real.FolderImageDataset + make_loader.",
    )
    key = dict(root=str(ds.index.root.resolve()), layout=layout, size=size, channels=channels, n=n, per_class=per_class, seed=seed, crop=crop)

    def build() -> ImageDataset:
        images = np.empty((len(ds), channels, size, size), np.float32)
        if num_workers > 0:
            loader = make_loader(ds, batch_size=64, shuffle=False, num_workers=num_workers, seed=seed)
            i = 0
            for x, _ in loader:
                images[i : i + len(x)] = x.numpy()
                i += len(x)
        else:
            for i in range(len(ds)):
                images[i] = ds.load(i)
        return ImageDataset(images=images, labels=ds.labels.copy(), classes=list(ds.classes))

    return _maybe_cached("image_folder", key, ds.paths, cache, build)


@register_dataset("imagenet_folder", kind="source", cached=False)
def imagenet_folder(
    root=None,
    *,
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    crop: str = "center",
    num_workers: int = 0,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = False,
) -> ImageDataset:
    """ImageNet-style class folders: root/<wnid>/<image> (e.g. ILSVRC/Data/CLS-LOC/train)."""
    return image_folder(root, layout="flat", size=size, channels=channels, n=n, per_class=per_class, seed=seed,
                        crop=crop, num_workers=num_workers, max_memory_mb=max_memory_mb, cache=cache)


@register_dataset("radimagenet_folder", kind="source", cached=False)
def radimagenet_folder(
    root=None,
    *,
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    crop: str = "center",
    num_workers: int = 0,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = False,
) -> ImageDataset:
    """RadImageNet folders root/<modality>/<anatomy>/<class>/<image>, classes named CT-lung-nodule."""
    return image_folder(root, layout="nested", size=size, channels=channels, n=n, per_class=per_class, seed=seed,
                        crop=crop, num_workers=num_workers, max_memory_mb=max_memory_mb, cache=cache)


# ----------------------------------------------------------------------------- LoDoPaB-CT

_LODOPAB_RE = re.compile(r"ground_truth_(train|validation|test)_(\d{3})\.hdf5$")


def _lodopab_patient_ids(root: Path, part: str) -> np.ndarray:
    p = root / f"patient_ids_rand_{part}.csv"
    if not p.is_file():
        raise FileNotFoundError(
            f"lodopab_ct: {p} not found; it maps each slice of the '{part}' part to a patient "
            "(shipped with LoDoPaB-CT) and is needed when labels_csv has no 'patient' column or is patient-level"
        )
    return np.loadtxt(p, dtype=np.int64, ndmin=1)


@register_dataset("lodopab_ct", kind="target", cached=False)
def lodopab_ct(
    root=None,
    labels_csv=None,
    *,
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    seed: int = 0,
    parts: Sequence[str] = ("train", "validation", "test"),
    classes: Sequence[str] | None = None,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = True,
) -> ImageDataset:
    """LoDoPaB-CT ground-truth slices (HDF5, key `data`) with binary labels from a user CSV."""
    _check_common(size, channels, n)
    _check_classes_param(classes)
    root = _require_path(root, "root", "lodopab_ct", kind="dir")
    csv = _require_path(labels_csv, "labels_csv", "lodopab_ct", kind="file")
    parts = [parts] if isinstance(parts, str) else list(parts)
    bad = sorted(set(parts) - {"train", "validation", "test"})
    if bad:
        raise ValueError(f"lodopab_ct: parts must be among train/validation/test, got {bad}")
    import pandas as pd

    head = pd.read_csv(csv, nrows=0, skipinitialspace=True).columns.str.strip().tolist()
    inputs = [csv]
    if "file" in head or "index" in head:  # slice-level rows
        df = _read_csv(csv, ["file", "index", "label"], "lodopab_ct")
        files, idx = [], []
        for f, i in zip(df["file"].astype(str), df["index"]):
            p = Path(f.strip()).expanduser()
            p = p if p.is_absolute() else root / p
            if not _LODOPAB_RE.search(p.name):
                raise ValueError(f"lodopab_ct: {csv} column 'file' value {f!r} is not a ground_truth_<part>_NNN.hdf5 name")
            files.append(p)
            if float(i) != int(float(i)) or int(float(i)) < 0:
                raise ValueError(f"lodopab_ct: {csv} column 'index' must hold slice numbers >= 0, got {i!r}")
            idx.append(int(float(i)))
        if "patient" in df.columns and not df["patient"].isna().any():
            patients = df["patient"].to_numpy()
        else:
            if "patient" in df.columns:
                raise ValueError(f"lodopab_ct: {csv} column 'patient' has empty values")
            patients, cache_ids = [], {}
            for p, i in zip(files, idx):
                part, num = _LODOPAB_RE.search(p.name).groups()
                if part not in cache_ids:
                    cache_ids[part] = _lodopab_patient_ids(root, part)
                    inputs.append(root / f"patient_ids_rand_{part}.csv")
                g = int(num) * LODOPAB_SLICES_PER_FILE + i
                if g >= len(cache_ids[part]):
                    raise ValueError(f"lodopab_ct: slice {p.name}[{i}] is beyond patient_ids_rand_{part}.csv ({len(cache_ids[part])} slices)")
                patients.append(cache_ids[part][g])
        labels, names = _binary_labels(df["label"], csv, "lodopab_ct", classes)
    elif "patient" in head:  # patient-level rows: every slice of the patient in `parts`
        df = _read_csv(csv, ["patient", "label"], "lodopab_ct")
        labels_p, names = _binary_labels(df["label"], csv, "lodopab_ct", classes)
        pid = _group_ids(df["patient"])
        if len(set(pid.tolist())) != len(pid):
            raise ValueError(f"lodopab_ct: {csv} column 'patient' lists a patient twice (patient-level CSV)")
        label_of = dict(zip(pid.tolist(), labels_p.tolist()))
        part_of = dict(zip(pid.tolist(), df["part"].astype(str).str.strip())) if "part" in df.columns else {}
        files, idx, patients, labels = [], [], [], []
        for part in parts:
            ids = _lodopab_patient_ids(root, part)
            inputs.append(root / f"patient_ids_rand_{part}.csv")
            for g in np.flatnonzero(np.isin(ids, list(label_of))):
                p_id = int(ids[g])
                if part_of and part_of.get(p_id, part) != part:
                    continue
                files.append(root / f"ground_truth_{part}_{g // LODOPAB_SLICES_PER_FILE:03d}.hdf5")
                idx.append(int(g % LODOPAB_SLICES_PER_FILE))
                patients.append(p_id)
                labels.append(label_of[p_id])
        if not files:
            raise ValueError(f"lodopab_ct: no slice of the patients in {csv} occurs in parts {parts} (patient_ids_rand_<part>.csv)")
        labels = np.asarray(labels, np.int64)
    else:
        raise ValueError(
            f"lodopab_ct: {csv} needs either columns 'file','index','label' (slice-level) or 'patient','label' "
            f"(patient-level); found columns {head}"
        )
    groups = _group_ids(patients)
    rng = np.random.default_rng([seed, 11])
    keep = _stratified_choice(labels, n, rng) if n is not None else np.arange(len(labels))
    files, idx = [files[i] for i in keep], [idx[i] for i in keep]
    labels, groups = labels[keep], groups[keep]
    _check_memory(len(keep), channels, size, max_memory_mb, "lodopab_ct", "Pass n to take a seeded subset of slices, or raise max_memory_mb.")
    used = sorted(set(files))
    for p in used:
        if not p.is_file():
            raise FileNotFoundError(f"lodopab_ct: HDF5 file not found: {p}")
    key = dict(root=str(root.resolve()), labels_csv=str(csv.resolve()), size=size, channels=channels, n=n, seed=seed,
               parts=parts, classes=None if classes is None else list(classes))

    def build() -> ImageDataset:
        import h5py

        images = np.empty((len(files), channels, size, size), np.float32)
        by_file: dict[Path, list[int]] = {}
        for row, p in enumerate(files):
            by_file.setdefault(p, []).append(row)
        for p, rows in by_file.items():
            with h5py.File(p, "r") as f:
                if "data" not in f:
                    raise ValueError(f"lodopab_ct: {p} has no dataset 'data' (keys: {list(f.keys())})")
                data = f["data"]
                if data.ndim != 3:
                    raise ValueError(f"lodopab_ct: {p} 'data' must be (slices, H, W), got shape {data.shape}")
                want = sorted({idx[r] for r in rows})
                if want[-1] >= data.shape[0]:
                    raise ValueError(f"lodopab_ct: {p} has {data.shape[0]} slices; labels_csv asks for index {want[-1]}")
                block = data[want]
            pos = {s: k for k, s in enumerate(want)}
            for r in rows:
                sl = np.clip(np.asarray(block[pos[idx[r]]], np.float32), 0.0, 1.0)
                images[r] = _finish(sl[..., None], size, channels, crop="stretch")
        return ImageDataset(images=images, labels=labels, classes=list(names), groups=groups)

    return _maybe_cached("lodopab_ct", key, inputs + used, cache, build)


# ----------------------------------------------------------------------------- KneeMRI

KNEE_COLUMNS = ("examId", "aclDiagnosis", "roiX", "roiY", "roiZ", "roiHeight", "roiWidth", "roiDepth", "volumeFilename")


def _crop_box(y0: int, x0: int, h: int, w: int, margin: float, square: bool) -> tuple[int, int, int, int]:
    cy, cx = y0 + h / 2.0, x0 + w / 2.0
    hh, ww = h * (1 + 2 * margin), w * (1 + 2 * margin)
    if square:
        hh = ww = max(hh, ww)
    hh, ww = max(1, int(round(hh))), max(1, int(round(ww)))
    return int(round(cy - hh / 2.0)), int(round(cx - ww / 2.0)), hh, ww


def _crop_padded(plane: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """plane[y0:y0+h, x0:x0+w] with zeros where the box leaves the image."""
    out = np.zeros((h, w), np.float32)
    H, W = plane.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, H), min(x0 + w, W)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = plane[ys:ye, xs:xe]
    return out


def _index_files(root: Path, names: set[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for n in names:  # the common case: files directly in root or in vol01..vol10
        if (root / n).is_file():
            found[n] = root / n
    if len(found) < len(names):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in filenames:
                if f in names and f not in found:
                    found[f] = Path(dirpath) / f
    return found


@register_dataset("knee_mri", kind="target", cached=False)
def knee_mri(
    root=None,
    metadata_csv=None,
    *,
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    seed: int = 0,
    task: str = "injury",
    margin: float = 0.1,
    square: bool = True,
    slices_per_exam: int | None = None,
    intensity_percentile: float | None = 99.5,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = True,
) -> ImageDataset:
    """KneeMRI (Stajduhar 2017): pickled volumes + metadata.csv, ROI slices, healthy vs injured ACL."""
    _check_common(size, channels, n)
    if task not in ("injury", "tear"):
        raise ValueError(f"knee_mri: task must be 'injury' (0 vs 1,2) or 'tear' (0,1 vs 2), got {task!r}")
    if not 0 <= margin <= 2:
        raise ValueError(f"knee_mri: margin must be in [0, 2] (fraction of the ROI size per side), got {margin!r}")
    if slices_per_exam is not None and slices_per_exam < 1:
        raise ValueError(f"knee_mri: slices_per_exam must be a positive integer or None, got {slices_per_exam!r}")
    if intensity_percentile is not None and not 0 < intensity_percentile <= 100:
        raise ValueError(f"knee_mri: intensity_percentile must be in (0, 100] or None, got {intensity_percentile!r}")
    root = _require_path(root, "root", "knee_mri", kind="dir")
    meta = _require_path(metadata_csv if metadata_csv not in (None, "") else root / "metadata.csv", "metadata_csv", "knee_mri", kind="file")
    df = _read_csv(meta, KNEE_COLUMNS, "knee_mri")
    for c in KNEE_COLUMNS[:-1]:
        v = np.asarray(df[c].to_numpy(), dtype=np.float64) if df[c].dtype.kind in "iuf" else None
        if v is None or np.any(v != np.round(v)):
            raise ValueError(f"knee_mri: {meta} column {c!r} must hold integers")
    diag = df["aclDiagnosis"].to_numpy().astype(np.int64)
    if not set(np.unique(diag).tolist()) <= {0, 1, 2}:
        raise ValueError(f"knee_mri: {meta} column 'aclDiagnosis' must be 0, 1 or 2, found {sorted(set(diag.tolist()))}")
    for c in ("roiHeight", "roiWidth", "roiDepth"):
        if (df[c] < 1).any():
            raise ValueError(f"knee_mri: {meta} column {c!r} must be >= 1")
    exam_label = (diag >= 1) if task == "injury" else (diag == 2)
    names = ["healthy", "injured"] if task == "injury" else ["intact_or_partial", "complete_tear"]

    # (row, z) for every selected slice, before reading any volume
    rows, zs = [], []
    for r in range(len(df)):
        z0, d = int(df["roiZ"].iloc[r]), int(df["roiDepth"].iloc[r])
        z_range = list(range(z0, z0 + d))
        if slices_per_exam is not None and len(z_range) > slices_per_exam:
            start = (len(z_range) - slices_per_exam) // 2
            z_range = z_range[start : start + slices_per_exam]
        rows += [r] * len(z_range)
        zs += z_range
    rows, zs = np.asarray(rows), np.asarray(zs)
    labels_all = exam_label[rows].astype(np.int64)
    if n is not None:
        keep = _stratified_choice(labels_all, n, np.random.default_rng([seed, 13]))
        rows, zs, labels_all = rows[keep], zs[keep], labels_all[keep]
    _check_memory(len(rows), channels, size, max_memory_mb, "knee_mri",
                  "Pass n or slices_per_exam to take fewer slices, or raise max_memory_mb.")
    fnames = df["volumeFilename"].astype(str).str.strip().to_numpy()
    wanted = sorted(set(fnames[np.unique(rows)].tolist()))
    found = _index_files(root, set(wanted))
    missing = [f for f in wanted if f not in found]
    if missing:
        raise FileNotFoundError(
            f"knee_mri: {len(missing)} volume file(s) named in {meta} not found under {root}: "
            f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
        )
    groups = df["examId"].to_numpy().astype(np.int64)[rows]
    key = dict(root=str(root.resolve()), metadata_csv=str(meta.resolve()), size=size, channels=channels, n=n, seed=seed,
               task=task, margin=margin, square=square, slices_per_exam=slices_per_exam,
               intensity_percentile=intensity_percentile)

    def build() -> ImageDataset:
        from spectral_ray import safe_pickle

        images = np.empty((len(rows), channels, size, size), np.float32)
        for r in np.unique(rows):
            path = found[fnames[r]]
            vol = safe_pickle.load(path)
            if not isinstance(vol, np.ndarray) or vol.ndim != 3 or not np.issubdtype(vol.dtype, np.number):
                raise ValueError(f"knee_mri: {path} must hold one numeric (slices, H, W) array, got "
                                 f"{type(vol).__name__}{getattr(vol, 'shape', '')}")
            out_rows = np.flatnonzero(rows == r)
            z_sel = zs[out_rows]
            if z_sel.min() < 0 or z_sel.max() >= vol.shape[0]:
                raise ValueError(f"knee_mri: {path} has {vol.shape[0]} slices; ROI of exam {df['examId'].iloc[r]} "
                                 f"asks for slices {z_sel.min()}..{z_sel.max()} (roiZ, roiDepth)")
            y0, x0, h, w = _crop_box(int(df["roiY"].iloc[r]), int(df["roiX"].iloc[r]), int(df["roiHeight"].iloc[r]),
                                     int(df["roiWidth"].iloc[r]), margin, square)
            crops = np.stack([_crop_padded(np.asarray(vol[z], np.float32), y0, x0, h, w) for z in z_sel])
            if intensity_percentile is None:
                lo, hi = 0.0, 4095.0  # 12-bit scanner range
            else:
                lo, hi = float(crops.min()), float(np.percentile(crops, intensity_percentile))
            crops = (crops - lo) / (hi - lo) if hi > lo else np.zeros_like(crops)
            for k, o in enumerate(out_rows):
                images[o] = _finish(np.clip(crops[k], 0, 1)[..., None], size, channels, crop="stretch")
        return ImageDataset(images=images, labels=labels_all, classes=names, groups=groups)

    return _maybe_cached("knee_mri", key, [meta] + [found[f] for f in wanted], cache, build)


# ----------------------------------------------------------------------------- generic CSV targets


@register_dataset("csv_target", kind="target", cached=False)
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
    crop: str = "center",
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = True,
) -> ImageDataset:
    """Any binary task: CSV path,label,patient over an image folder (or .npy files) or one .npz."""
    _check_common(size, channels, n)
    _check_classes_param(classes)
    csv = _require_path(csv, "csv", "csv_target", kind="file")
    df = _read_csv(csv, ["path", "label", "patient"], "csv_target")
    labels, names = _binary_labels(df["label"], csv, "csv_target", classes)
    groups = _group_ids(df["patient"])
    refs = df["path"].astype(str).str.strip().tolist()
    rng = np.random.default_rng([seed, 17])
    keep = _stratified_choice(labels, n, rng) if n is not None else np.arange(len(labels))
    refs, labels, groups = [refs[i] for i in keep], labels[keep], groups[keep]
    _check_memory(len(refs), channels, size, max_memory_mb, "csv_target", "Pass n to take a seeded subset, or raise max_memory_mb.")
    key = dict(csv=str(csv.resolve()), size=size, channels=channels, n=n, seed=seed, npz_key=npz_key,
               classes=None if classes is None else list(classes), scale=scale, crop=crop)

    if npz not in (None, ""):
        npz_path = _require_path(npz, "npz", "csv_target", kind="file")
        key["npz"] = str(npz_path.resolve())
        with np.load(npz_path, allow_pickle=False) as z:
            keys = set(z.files)
        as_index = all(re.fullmatch(r"\d+", r) for r in refs)
        if as_index and npz_key not in keys:
            raise ValueError(f"csv_target: column 'path' holds indices but {npz_path} has no array {npz_key!r} (arrays: {sorted(keys)[:10]})")
        if not as_index:
            bad = [r for r in refs if r not in keys]
            if bad:
                raise ValueError(f"csv_target: column 'path' names arrays not in {npz_path}: {bad[:5]}")

        def build() -> ImageDataset:
            images = np.empty((len(refs), channels, size, size), np.float32)
            with np.load(npz_path, allow_pickle=False) as z:
                if as_index:
                    stack = z[npz_key]
                    for i, r in enumerate(refs):
                        if int(r) >= len(stack):
                            raise ValueError(f"csv_target: column 'path' index {r} beyond {npz_path}[{npz_key!r}] ({len(stack)} images)")
                        images[i] = _finish(_array_to_hwc(stack[int(r)], scale, f"{npz_path}[{r}]"), size, channels, crop)
                else:
                    for i, r in enumerate(refs):
                        images[i] = _finish(_array_to_hwc(z[r], scale, f"{npz_path}[{r!r}]"), size, channels, crop)
            return ImageDataset(images=images, labels=labels, classes=list(names), groups=groups)

        return _maybe_cached("csv_target", key, [csv, npz_path], cache, build)

    base = _require_path(root, "root", "csv_target", kind="dir") if root not in (None, "") else csv.parent
    key["root"] = str(base.resolve())
    paths = []
    for r in refs:
        p = Path(r).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise FileNotFoundError(f"csv_target: image named in {csv} column 'path' not found: {p}")
        paths.append(p)

    def build() -> ImageDataset:
        images = np.empty((len(paths), channels, size, size), np.float32)
        for i, p in enumerate(paths):
            hwc = _decode_image(p, size)
            if scale == "minmax":
                lo, hi = float(hwc.min()), float(hwc.max())
                hwc = (hwc - lo) / (hi - lo) if hi > lo else np.zeros_like(hwc)
            images[i] = _finish(hwc, size, channels, crop)
        return ImageDataset(images=images, labels=labels, classes=list(names), groups=groups)

    return _maybe_cached("csv_target", key, [csv] + sorted(set(paths)), cache, build)
