"""The ``natural`` source: random crops of the photographs that scikit-image and scikit-learn ship.

One class per photograph (15 classes, all of which load offline from the installed packages).
A crop of side ``size × s`` at a random position (s log-uniform in [1, ``max_scale``], i.e.
close to native scale) is resized to ``size`` bilinearly *without* anti-aliasing and flipped
left/right at random. The shipped photographs are already soft at the pixel scale (JPEG, lens):
native-scale crops have a mean log-log slope of −2.50 at 64 px; area (anti-aliased) downscaling
by up to 2× steepens it to −2.86, outside the [−2.8, −1.6] band of real photographs, while the
plain bilinear resize keeps it at ≈ −2.55 (measured; see docs/DATA.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray

from spectral_ray.data.dataset import check_grid
from spectral_ray.data.registry import ImageDataset, register_dataset

# class name -> loader key; skimage.data names, or sklearn:<file> for load_sample_image
PHOTOGRAPHS = {
    "astronaut": "astronaut",
    "coffee": "coffee",
    "chelsea": "chelsea",
    "rocket": "rocket",
    "camera": "camera",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "moon": "moon",
    "coins": "coins",
    "hubble": "hubble_deep_field",
    "immunohistochemistry": "immunohistochemistry",
    "clock": "clock",
    "china": "sklearn:china.jpg",
    "flower": "sklearn:flower.jpg",
}
CLASSES = list(PHOTOGRAPHS)


@lru_cache(maxsize=None)
def load_photograph(name: str) -> np.ndarray:
    """The photograph as float32 RGB (H, W, 3) in [0, 1] (gray photographs replicated)."""
    key = PHOTOGRAPHS[name]
    if key.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(key.split(":", 1)[1])
    else:
        import skimage.data

        img = getattr(skimage.data, key)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3].astype(np.float32)
    return img / 255.0 if img.max() > 1.0 else img


@register_dataset("natural", kind="source")
def natural(
    size: int = 64,
    channels: int = 1,
    n: int = 5000,
    seed: int = 0,
    max_scale: float = 2.0,
    progress: bool = True,
) -> ImageDataset:
    """Random near-native-scale crops of 15 photographs shipped by scikit-image / scikit-learn."""
    from tqdm.auto import tqdm

    check_grid(size, channels, n)
    if not max_scale >= 1.0:
        raise ValueError(f"max_scale must be >= 1, got {max_scale}")
    photos = [load_photograph(c) for c in CLASSES]
    labels = np.random.default_rng([seed, 0]).permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.empty((n, channels, size, size), np.float32)
    for i in tqdm(range(n), desc="natural", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, 1, i])
        photo = photos[labels[i]]
        h, w, _ = photo.shape
        side = int(round(size * np.exp(rng.uniform(0.0, np.log(max_scale)))))
        side = min(side, h, w)
        y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[y0 : y0 + side, x0 : x0 + side]
        crop = rgb2gray(crop)[None] if channels == 1 else np.moveaxis(crop, -1, 0)
        if side != size:
            crop = F.interpolate(torch.from_numpy(np.ascontiguousarray(crop))[None], size=(size, size), mode="bilinear", antialias=False)[0].numpy()
        if rng.random() < 0.5:
            crop = crop[..., ::-1]
        images[i] = np.clip(crop, 0.0, 1.0)
    return ImageDataset(images=images, labels=labels, classes=list(CLASSES))
