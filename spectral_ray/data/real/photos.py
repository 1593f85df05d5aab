"""``natural_real`` (source): non-overlapping tiles of twelve real photographs (mate-backgrounds'
nature/ folder, fetched by ``scripts/real-mini-data.sh``), one class per photograph; docs/DATA.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2gray

from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import maybe_cached
from spectral_ray.data.real.minidata import PHOTOGRAPHS, missing_files, resolve
from spectral_ray.data.real.realmini import pick, tile_origins
from spectral_ray.data.registry import register_dataset

__all__ = ["natural_real"]


def _photo(path: Path, short_side: int | None) -> np.ndarray:
    """The photograph as (H, W, 3) float32 in [0, 1], downscaled (Lanczos, anti-aliased) so its
    short side is ``short_side`` px (never enlarged; None: native)."""
    img = Image.open(path).convert("RGB")
    if short_side is not None and min(img.size) > short_side:
        f = short_side / min(img.size)
        img = img.resize((round(img.size[0] * f), round(img.size[1] * f)), Image.Resampling.LANCZOS)
    return np.asarray(img, np.float32) / 255.0


@register_dataset("natural_real", kind="source", cached=False, optional_paths=["folder"],
                  check=lambda p: missing_files("natural_real", p, {"folder": "photos"}))
def natural_real(folder=None, *, size: int = 64, channels: int = 1, n: int | None = None, seed: int = 0,
                 short_side: int | None = 512, cache: bool = True) -> ImageDataset:
    """Non-overlapping tiles of 12 real photographs (mate-backgrounds nature/), one class each."""
    check_grid(size, channels, n, n_all=True)
    root = resolve(folder, "photos", "natural_real", "folder")
    files = [root / f"{name}.jpg" for name in PHOTOGRAPHS]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"natural_real: photographs missing in {root}: {', '.join(absent)}")

    def build() -> ImageDataset:
        tiles, labels = [], []
        for c, f in enumerate(files):
            rgb = _photo(f, short_side)
            gray = rgb2gray(rgb)
            h, w = gray.shape
            oy, ox = (h % size) // 2, (w % size) // 2  # centre the grid
            for y, x in tile_origins(h - oy, w - ox, size):
                t = gray[oy + y: oy + y + size, ox + x: ox + x + size][None] if channels == 1 else \
                    np.moveaxis(rgb[oy + y: oy + y + size, ox + x: ox + x + size], -1, 0)
                tiles.append(t)
                labels.append(c)
        labels = np.asarray(labels, np.int64)
        keep = pick(labels, n, seed, "natural_real")
        images = np.clip(np.stack([tiles[i] for i in keep]).astype(np.float32), 0.0, 1.0)
        return ImageDataset(images=images, labels=labels[keep], classes=list(PHOTOGRAPHS))

    key = dict(size=size, channels=channels, n=n, seed=seed, short_side=short_side)
    return maybe_cached("natural_real", key, files, cache, build)
