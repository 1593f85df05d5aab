"""The real-mini datasets: real pixels from Debian packages, fetched by ``scripts/real-mini-data.sh``
(docs/DATA.md, "Real pixels").

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

from pathlib import Path

import numpy as np
from PIL import Image

from spectral_ray.data.dataset import ImageDataset
from spectral_ray.data.real.common import _GRAY, check_common, maybe_cached, stratified_choice
from spectral_ray.data.real.minidata import (FILES, LAB_HU_WINDOW, PHOTOGRAPHS, hu_window, missing_files,
                                             percentile_scale, read_invesalius, read_label_table, read_nifti, resolve)
from spectral_ray.data.registry import register_dataset

__all__ = ["natural_real", "medical_real", "mri_atlas", "STRUCTURES", "tile_origins"]

# atlas structure -> prefixes of its AAL label names (AAL's own lobe grouping)
STRUCTURES = {
    "frontal": ("Precentral", "Frontal", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory", "Rectus"),
    "temporal": ("Temporal", "Heschl", "Hippocampus", "ParaHippocampal", "Amygdala", "Fusiform"),
    "occipital": ("Occipital", "Calcarine", "Cuneus", "Lingual"),
    "cerebellum": ("Cerebelum", "Vermis"),
}
BODY_HU = -500.0  # a CT voxel above this is patient (air −1000, fat ≈ −100)


def tile_origins(h: int, w: int, size: int, offset: int = 0) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``size`` tiles of an ``h × w`` plane, the grid
    shifted by ``offset`` px on both axes (tiles wholly inside the plane)."""
    return [(y, x) for y in range(offset, h - size + 1, size) for x in range(offset, w - size + 1, size)]


def _pick(labels: np.ndarray, n, seed: int, what: str) -> np.ndarray:
    if n is None:
        return np.arange(len(labels))
    if n > len(labels):
        raise ValueError(f"{what}: n={n} asks for more than the {len(labels)} distinct patches there are")
    return stratified_choice(labels, n, np.random.default_rng([seed, 21]))


def _as_channels(gray: np.ndarray, channels: int) -> np.ndarray:
    """(n, size, size) → (n, C, size, size) float32, gray repeated for 3 channels."""
    return np.repeat(gray[:, None], channels, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- natural_real


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
    check_common(size, channels, n)
    root = resolve(folder, "photos", "natural_real", "folder")
    files = [root / f"{name}.jpg" for name in PHOTOGRAPHS]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"natural_real: photographs missing in {root}: {', '.join(absent)}")

    def build() -> ImageDataset:
        tiles, labels = [], []
        for c, f in enumerate(files):
            rgb = _photo(f, short_side)
            gray = rgb @ _GRAY
            h, w = gray.shape
            oy, ox = (h % size) // 2, (w % size) // 2  # centre the grid
            for y, x in tile_origins(h - oy, w - ox, size):
                t = gray[oy + y: oy + y + size, ox + x: ox + x + size][None] if channels == 1 else \
                    np.moveaxis(rgb[oy + y: oy + y + size, ox + x: ox + x + size], -1, 0)
                tiles.append(t)
                labels.append(c)
        labels = np.asarray(labels, np.int64)
        keep = _pick(labels, n, seed, "natural_real")
        images = np.clip(np.stack([tiles[i] for i in keep]).astype(np.float32), 0.0, 1.0)
        return ImageDataset(images=images, labels=labels[keep], classes=list(PHOTOGRAPHS))

    key = dict(size=size, channels=channels, n=n, seed=seed, short_side=short_side)
    return maybe_cached("natural_real", key, files, cache, build)


# ----------------------------------------------------------------------------- medical_real


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
    check_common(size, channels, n)
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
        keep = _pick(labels, n, seed, "medical_real")
        gray = np.stack([hu_window(hu[zs[i], y: y + size, x: x + size], window) for i, (y, x) in zip(keep, origins[keep])])
        names = [f"level{k + 1}of{levels}" for k in range(levels)]
        return ImageDataset(images=_as_channels(gray, channels), labels=labels[keep], classes=names)

    key = dict(size=size, channels=channels, n=n, seed=seed, window=list(window), levels=levels, min_body=min_body)
    return maybe_cached("medical_real", key, [path], cache, build)


# ----------------------------------------------------------------------------- mri_atlas


def structure_mask(atlas: np.ndarray, table: dict[int, str], structure: str) -> np.ndarray:
    """Boolean mask of the atlas voxels whose label name starts with one of ``structure``'s prefixes."""
    if structure not in STRUCTURES:
        raise ValueError(f"mri_atlas: structure must be one of {', '.join(map(repr, STRUCTURES))}, got {structure!r}")
    ids = [i for i, name in table.items() if i > 0 and name.startswith(STRUCTURES[structure])]
    if not ids:
        raise ValueError(f"mri_atlas: no label of the atlas table matches structure {structure!r}")
    return np.isin(atlas, ids)


def slab_slices(valid: np.ndarray, slab: int, gap: int) -> list[tuple[int, list[int]]]:
    """(slab id, used slice indices) over the run of ``valid`` slices: slabs of ``slab``
    consecutive slices from the first valid one, the last ``gap`` of each left out."""
    z = np.flatnonzero(valid)
    if len(z) == 0:
        return []
    out = []
    for k, start in enumerate(range(int(z[0]), int(z[-1]) + 1, slab)):
        used = [s for s in range(start, start + slab - gap) if s <= z[-1] and valid[s]]
        if used:
            out.append((k, used))
    return out


def _centres(pos: np.ndarray, neg: np.ndarray, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """k positive and k negative centre voxels ((2k, 2) int, labels (2k,)) drawn without replacement."""
    p = pos[rng.choice(len(pos), size=k, replace=False)]
    q = neg[rng.choice(len(neg), size=k, replace=False)]
    return np.concatenate([p, q]), np.concatenate([np.ones(k, np.int64), np.zeros(k, np.int64)])


def near_border(inside: np.ndarray, brain: np.ndarray, border_mm: float | None, voxel_mm) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) candidate centres: brain voxels in / outside the structure, with
    ``border_mm`` only those within that distance (3-D, mm) of the other side — so the two
    classes come from the same neighbourhood and the patch's place in the head tells little."""
    pos, neg = inside & brain, brain & ~inside
    if border_mm is None:
        return pos, neg
    from scipy.ndimage import distance_transform_edt

    return (pos & (distance_transform_edt(~neg, sampling=voxel_mm) <= border_mm),
            neg & (distance_transform_edt(~pos, sampling=voxel_mm) <= border_mm))


def _atlas_patches(t1: np.ndarray, pos_mask: np.ndarray, neg_mask: np.ndarray, size: int, n: int, seed: int,
                   slab: int, gap: int, min_voxels: int):
    """(patches (n, size, size), labels, groups) centred on voxels of ``pos_mask`` (label 1) and
    ``neg_mask`` (label 0) in axial slices (RAS: axis 2), shown with
    anterior up and the centre voxel at pixel (size/2, size/2); each used slice gives as many
    positive as negative centres (so the slice level does not predict the label)."""
    valid = np.array([(pos_mask[:, :, z].sum() >= min_voxels) and (neg_mask[:, :, z].sum() >= min_voxels)
                      for z in range(t1.shape[2])])
    slabs = slab_slices(valid, slab, gap)
    n_slices = sum(len(u) for _, u in slabs)
    if n_slices == 0:
        raise ValueError("mri_atlas: no axial slice holds enough candidate centres of both classes (min_voxels)")
    k = -(-n // (2 * n_slices))
    h = size // 2
    pad = np.pad(t1, ((h, h), (h, h + 1), (0, 0)))  # pixel (h, h) of a patch is its centre voxel
    patches, labels, groups = [], [], []
    for g, used in slabs:
        for z in used:
            rng = np.random.default_rng([seed, 31, z])
            pos, neg = np.argwhere(pos_mask[:, :, z]), np.argwhere(neg_mask[:, :, z])
            kk = min(k, len(pos), len(neg))
            for (x, y), lab in zip(*_centres(pos, neg, kk, rng)):
                patches.append(pad[x: x + size, y + 1: y + 1 + size, z].T[::-1])  # rows: anterior → posterior
                labels.append(lab)
                groups.append(g)
    labels, groups = np.asarray(labels, np.int64), np.asarray(groups, np.int64)
    if n > len(labels):
        raise ValueError(f"mri_atlas: n={n} asks for more than the {len(labels)} patches the slabs give")
    keep = np.sort(stratified_choice(labels, n, np.random.default_rng([seed, 32])))
    return np.stack([patches[i] for i in keep]), labels[keep], groups[keep]


@register_dataset("mri_atlas", kind="target", cached=False, optional_paths=["t1", "atlas", "atlas_labels"],
                  check=lambda p: missing_files("mri_atlas", p, {"t1": "t1", "atlas": "atlas", "atlas_labels": "atlas_labels"}))
def mri_atlas(t1=None, atlas=None, atlas_labels=None, *, size: int = 64, channels: int = 1, n: int = 800, seed: int = 0,
              structure: str = "frontal", border_mm: float | None = 12.0, slab: int = 8, gap: int = 3,
              percentile: float = 99.5, min_voxels: int = 200, cache: bool = True) -> ImageDataset:
    """Colin27 T1 MRI patches near an AAL structure's border: is the centre voxel inside it (default frontal lobe); groups = axial slab."""
    check_common(size, channels, n)
    if n is None:
        raise ValueError("mri_atlas: n must be a positive integer (patch centres are drawn)")
    if not (isinstance(slab, int) and isinstance(gap, int) and 0 <= gap < slab):
        raise ValueError(f"mri_atlas: slab and gap must be integers with 0 <= gap < slab, got slab={slab!r}, gap={gap!r}")
    if structure not in STRUCTURES:
        raise ValueError(f"mri_atlas: structure must be one of {', '.join(map(repr, STRUCTURES))}, got {structure!r}")
    paths = [resolve(t1, "t1", "mri_atlas", "t1"), resolve(atlas, "atlas", "mri_atlas", "atlas"),
             resolve(atlas_labels, "atlas_labels", "mri_atlas", "atlas_labels")]

    def build() -> ImageDataset:
        vol, affine, voxel_mm = read_nifti(paths[0])
        lab, affine_atlas, _ = read_nifti(paths[1])
        if vol.shape[:3] != lab.shape[:3] or not np.allclose(affine, affine_atlas, atol=1e-3):
            raise ValueError(f"mri_atlas: {paths[0]} and {paths[1]} are not on the same voxel grid "
                             f"(shapes {vol.shape[:3]} vs {lab.shape[:3]}); resample the atlas to the MRI first")
        lab = np.asarray(lab).astype(np.int64)
        pos, neg = near_border(structure_mask(lab, read_label_table(paths[2]), structure), lab > 0, border_mm, voxel_mm)
        images, labels, groups = _atlas_patches(percentile_scale(np.asarray(vol)[..., 0] if vol.ndim == 4 else vol, percentile),
                                                pos, neg, size, n, seed, slab, gap, min_voxels)
        return ImageDataset(images=_as_channels(images, channels), labels=labels,
                            classes=[f"outside_{structure}", f"in_{structure}"], groups=groups)

    if border_mm is not None and not border_mm > 0:
        raise ValueError(f"mri_atlas: border_mm must be > 0 (mm) or None (anywhere in the brain), got {border_mm!r}")
    key = dict(size=size, channels=channels, n=n, seed=seed, structure=structure, border_mm=border_mm, slab=slab, gap=gap,
               percentile=percentile, min_voxels=min_voxels)
    return maybe_cached("mri_atlas", key, paths, cache, build)


__all__ += ["FILES", "ct_tiles", "slab_slices", "structure_mask", "near_border"]
