"""Checks and conversions shared by the embedded generators."""

from __future__ import annotations

import numpy as np


def check_params(size: int, channels: int, n: int) -> None:
    """The generators' common parameters: even size ≥ 16 px, 1 or 3 channels, n ≥ 1."""
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def with_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(n, H, W) gray → (n, C, H, W) float32, gray replicated for C = 3."""
    x = images.astype(np.float32)[:, None]
    return np.ascontiguousarray(np.repeat(x, channels, axis=1)) if channels > 1 else x
