"""What a dataset's images look like in frequency: the mean radial spectrum and its slope.
(The preview grid and the spectrum plot are drawn by :mod:`spectral_ray.plots`.)"""

from __future__ import annotations

import numpy as np

from spectral_ray.data.registry import ImageDataset
from spectral_ray.spectrum import radial_psd, spectral_slope

__all__ = ["dataset_spectrum"]


def dataset_spectrum(ds: ImageDataset, max_images: int = 2000, seed: int = 0) -> tuple[np.ndarray, float]:
    """Mean radial PSD (channel-mean images, up to ``max_images``) and its log-log slope over
    bins k = 1 … N/2 (:func:`spectral_ray.spectrum.spectral_slope`)."""
    idx = np.arange(len(ds))
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    gray = ds.images[idx].mean(axis=1).astype(np.float64)
    psd = radial_psd(gray).mean(0)
    return psd, spectral_slope(psd)
