"""The one in-memory dataset type every builder returns and every consumer reads, and the image
grid every builder shares (:func:`check_grid`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageDataset", "MIN_SIZE", "check_size", "check_grid"]

# Smallest image side (px) of every dataset: the MR phantoms keep a fully sampled k-space centre
# of size // 16 lines, and readers share the bound so that a sweep's `size` suits every dataset.
MIN_SIZE = 16


def check_size(size) -> None:
    """``ValueError`` unless ``size`` is an even integer >= :data:`MIN_SIZE` (the PSD's radial
    bins and the artifacts' frequency grid need an even side)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be an even integer >= {MIN_SIZE} (pixels), got {size!r}")


def check_grid(size, channels, n, *, n_all: bool = False) -> None:
    """The parameters every builder shares: :func:`check_size`, 1 or 3 ``channels``, ``n`` >= 1
    (``n_all``: or None, every image the reader finds)."""
    check_size(size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if n is None and n_all:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer{' or None' if n_all else ''}, got {n!r}")


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
