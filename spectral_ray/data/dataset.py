"""The one in-memory dataset type every builder returns and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageDataset"]


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
