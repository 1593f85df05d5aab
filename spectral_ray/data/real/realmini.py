"""What the real-mini datasets share (docs/DATA.md, "Real pixels"): the non-overlapping tile grid,
the seeded subset and the channel conversion. The datasets live one per module (``photos``,
``ct_head``, ``mri_atlas``), so that editing the target never changes a source's code version
(which would retrain its backbones):

* ``natural_real`` (source): non-overlapping tiles of twelve photographs (mate-backgrounds'
  nature/ folder), one class per photograph.
* ``medical_real`` (source): non-overlapping axial tiles of a head CT (invesalius-examples'
  ``Cranium.inv3``) through the lab's HU window, one class per head level (slab of slices).
* ``mri_atlas`` (target): patches of the Colin27 T1 MRI (mricron-data's ``ch2``) labelled by
  whether their centre voxel lies in an AAL atlas structure, grouped by axial slab.

**No patch repeats across splits.** A source's tiles are cut on a non-overlapping grid of each
photograph / slice, so no pixel (voxel) is in two tiles, whatever split the store draws. The
target has one subject, so there are no patients to group by: ``groups`` is the axial slab
(``slab`` slices), and the last ``gap`` slices of every slab are not used, so patches of
different groups are ≥ ``gap`` + 1 mm apart; patches of one slice overlap and share a group.
"""

from __future__ import annotations

import numpy as np

from spectral_ray.data.real.common import stratified_choice

__all__ = ["tile_origins", "pick", "as_channels"]


def tile_origins(h: int, w: int, size: int, offset: int = 0) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``size`` tiles of an ``h × w`` plane, the grid
    shifted by ``offset`` px on both axes (tiles wholly inside the plane)."""
    return [(y, x) for y in range(offset, h - size + 1, size) for x in range(offset, w - size + 1, size)]


def pick(labels: np.ndarray, n, seed: int, what: str) -> np.ndarray:
    """Indices of a seeded class-stratified subset of ``n`` (None: all); an error naming ``what``
    when ``n`` exceeds the distinct patches there are (tiles are never repeated to pad)."""
    if n is None:
        return np.arange(len(labels))
    if n > len(labels):
        raise ValueError(f"{what}: n={n} asks for more than the {len(labels)} distinct patches there are")
    return stratified_choice(labels, n, np.random.default_rng([seed, 21]))


def as_channels(gray: np.ndarray, channels: int) -> np.ndarray:
    """(n, size, size) → (n, C, size, size) float32, gray repeated for 3 channels."""
    return np.repeat(gray[:, None], channels, axis=1).astype(np.float32)
