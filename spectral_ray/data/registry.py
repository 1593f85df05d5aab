"""Dataset registry: one name per dataset, a builder per name, and the on-disk cache in between."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from spectral_ray.data import cache

__all__ = ["ImageDataset", "register_dataset", "get_dataset", "list_datasets", "dataset_info"]


@dataclass
class ImageDataset:
    """Images with labels (and patient groups for targets).

    images: ``(n, C, H, W)`` float32 in [0, 1]; labels: ``(n,)`` int64; classes: names indexed by
    label; groups: ``(n,)`` int64 patient ids, or None for sources; params: what built it.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    groups: np.ndarray | None = None
    name: str = ""
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageDataset":
        """Rows ``index`` (an index array or boolean mask) as a new dataset sharing classes/params."""
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            classes=self.classes,
            groups=None if self.groups is None else self.groups[index],
            name=self.name,
            params=self.params,
        )


@dataclass
class _Entry:
    builder: Callable[..., ImageDataset]
    kind: str  # "source" or "target"
    cached: bool
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, *, kind: str, cached: bool = True):
    """Decorator: register ``builder(**params) -> ImageDataset`` under ``name``.

    ``kind`` is ``"source"`` (pretraining, multi-class) or ``"target"`` (binary, with groups).
    Cached builders are pure functions of their parameters; their arrays are stored on disk.
    """
    if kind not in ("source", "target"):
        raise ValueError(f"kind must be 'source' or 'target', got {kind!r}")

    def wrap(builder):
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = _Entry(builder, kind, cached, doc.splitlines()[0] if doc else "")
        return builder

    return wrap


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def list_datasets(kind: str | None = None) -> list[str]:
    """Registered dataset names, optionally only ``"source"`` or ``"target"`` ones."""
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def dataset_info(name: str) -> dict:
    """Kind, cache policy, description and the builder's default parameters."""
    e = _entry(name)
    defaults = {
        k: p.default
        for k, p in inspect.signature(e.builder).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {"name": name, "kind": e.kind, "cached": e.cached, "description": e.description, "defaults": defaults}


def get_dataset(name: str, *, use_cache: bool = True, progress: bool = True, **params) -> ImageDataset:
    """Build (or load from the cache) dataset ``name`` with ``params`` (size, channels, n, seed, …).

    Unknown parameters raise ``TypeError`` naming them; the same parameters always give identical
    arrays.
    """
    e = _entry(name)
    sig = inspect.signature(e.builder)
    accepts_progress = "progress" in sig.parameters
    unknown = sorted(set(params) - set(sig.parameters))
    if unknown:
        allowed = sorted(set(sig.parameters) - {"progress"})
        raise TypeError(f"dataset {name!r} got unknown parameter(s) {unknown}; allowed: {allowed}")
    full = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    full.pop("progress", None)
    full.update(params)

    def build() -> ImageDataset:
        ds = e.builder(**full, **({"progress": progress} if accepts_progress else {}))
        ds.name, ds.params = name, dict(full)
        return ds

    if not (e.cached and use_cache):
        return build()
    return cache.load_or_build(name, full, build)
