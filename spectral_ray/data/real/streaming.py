"""Class-folder datasets streamed from disk: the file index of an ImageNet (``flat``) or
RadImageNet (``nested``) folder, a ``torch.utils.data.Dataset`` over it and its ``DataLoader``.

For sources too large for memory; the in-memory registry readers (:mod:`.folders`) use the same
index, so both paths see the same images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from spectral_ray.data.dataset import check_grid
from spectral_ray.data.real.common import IMAGE_EXTENSIONS, load_image, require_path, stratified_choice

__all__ = ["FolderIndex", "FolderImageDataset", "scan_image_folder", "make_loader"]


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
    root = require_path(root, "root", "image_folder", kind="dir")
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
        keep = stratified_choice(labels, n, rng)
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
        check_grid(size, channels, n, n_all=True)
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
