"""``medical_real`` (source): non-overlapping axial tiles of a real head CT (invesalius-examples'
``Cranium.inv3``, fetched by ``scripts/real-mini-data.sh``) through the lab's HU window, one class
per head level; docs/DATA.md."""

from __future__ import annotations

import numpy as np

from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import maybe_cached
from spectral_ray.data.real.minidata import LAB_HU_WINDOW, hu_window, missing_files, read_invesalius, resolve
from spectral_ray.data.real.realmini import as_channels, pick, tile_origins
from spectral_ray.data.registry import register_dataset

__all__ = ["medical_real", "ct_tiles"]

BODY_HU = -500.0  # a CT voxel above this is patient (air −1000, fat ≈ −100)


def ct_tiles(hu: np.ndarray, size: int, min_body: float) -> tuple[np.ndarray, np.ndarray]:
    """(slice index, (y, x)) of every tile of every axial slice with ≥ ``min_body`` of its voxels
    in the patient; slice z's grid is shifted by (z mod 2)·size/2, tiles never overlap in a slice."""
    zs, origins = [], []
    for z in range(hu.shape[0]):
        body = hu[z] > BODY_HU
        for y, x in tile_origins(*body.shape, size, offset=(z % 2) * (size // 2)):
            if body[y: y + size, x: x + size].mean() >= min_body:
                zs.append(z)
                origins.append((y, x))
    return np.asarray(zs, np.int64), np.asarray(origins, np.int64).reshape(-1, 2)


@register_dataset("medical_real", kind="source", cached=False, optional_paths=["volume"],
                  check=lambda p: missing_files("medical_real", p, {"volume": "ct"}))
def medical_real(volume=None, *, size: int = 64, channels: int = 1, n: int | None = None, seed: int = 0,
                 window: tuple[float, float] = LAB_HU_WINDOW, levels: int = 4, min_body: float = 0.25,
                 cache: bool = True) -> ImageDataset:
    """Non-overlapping axial tiles of a real head CT (InVesalius Cranium) in the lab's HU window; class = head level."""
    check_grid(size, channels, n, n_all=True)
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"medical_real: levels must be an integer >= 2, got {levels!r}")
    if not 0.0 <= min_body <= 1.0:
        raise ValueError(f"medical_real: min_body must be in [0, 1], got {min_body!r}")
    window = tuple(float(v) for v in window)
    path = resolve(volume, "ct", "medical_real", "volume")

    def build() -> ImageDataset:
        hu = read_invesalius(path, masks=False).hu
        zs, origins = ct_tiles(hu, size, min_body)
        if len(zs) == 0:
            raise ValueError(f"medical_real: {path} has no {size}-px tile with >= {min_body:.0%} patient")
        # head level: `levels` equal runs of the slices that have tiles, inferior (0) to superior
        z_lo, z_hi = zs.min(), zs.max() + 1
        labels = np.minimum((zs - z_lo) * levels // (z_hi - z_lo), levels - 1).astype(np.int64)
        keep = pick(labels, n, seed, "medical_real")
        gray = np.stack([hu_window(hu[zs[i], y: y + size, x: x + size], window) for i, (y, x) in zip(keep, origins[keep])])
        names = [f"level{k + 1}of{levels}" for k in range(levels)]
        return ImageDataset(images=as_channels(gray, channels), labels=labels[keep], classes=names)

    key = dict(size=size, channels=channels, n=n, seed=seed, window=list(window), levels=levels, min_body=min_body)
    return maybe_cached("medical_real", key, [path], cache, build)
