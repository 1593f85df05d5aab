"""Sources read into memory from class folders: ``image_folder`` and its two layouts,
``imagenet_folder`` (flat) and ``radimagenet_folder`` (nested); docs/REAL_DATA.md."""

from __future__ import annotations

import inspect

import numpy as np

from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import MAX_MEMORY_MB, check_memory, maybe_cached
from spectral_ray.data.real.streaming import FolderImageDataset, make_loader
from spectral_ray.data.registry import register_dataset

__all__ = ["image_folder", "imagenet_folder", "radimagenet_folder"]


@register_dataset("image_folder", kind="source", cached=False, paths=["root"])
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
    check_grid(size, channels, n, n_all=True)
    ds = FolderImageDataset(root, layout=layout, size=size, channels=channels, per_class=per_class, n=n, seed=seed, crop=crop)
    check_memory(
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

    return maybe_cached("image_folder", key, ds.paths, cache, build)


def _layout_reader(name: str, layout: str, doc: str):
    """``image_folder`` with ``layout`` fixed: the same parameters (one signature, read from
    ``image_folder``), less ``layout``, registered as ``name``."""

    def reader(root=None, **params) -> ImageDataset:
        return image_folder(root, layout=layout, **params)

    sig = inspect.signature(image_folder)
    reader.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "layout"])
    reader.__name__ = reader.__qualname__ = name
    reader.__doc__ = doc
    return register_dataset(name, kind="source", cached=False, paths=["root"])(reader)


imagenet_folder = _layout_reader(
    "imagenet_folder", "flat", "ImageNet-style class folders: root/<wnid>/<image> (e.g. ILSVRC/Data/CLS-LOC/train).")
radimagenet_folder = _layout_reader(
    "radimagenet_folder", "nested",
    "RadImageNet folders root/<modality>/<anatomy>/<class>/<image>, classes named CT-lung-nodule.")
