"""Array conversions shared by the embedded generators."""

from __future__ import annotations

import numpy as np


def with_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(n, H, W) gray → (n, C, H, W) float32, gray replicated for C = 3."""
    x = images.astype(np.float32)[:, None]
    return np.ascontiguousarray(np.repeat(x, channels, axis=1)) if channels > 1 else x
