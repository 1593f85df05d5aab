"""``mri_atlas`` (target): patches of the Colin27 T1 MRI (mricron-data's ``ch2``, fetched by
``scripts/real-mini-data.sh``) labelled by whether their centre voxel lies in an AAL atlas
structure, both classes drawn near the structure's border, grouped by axial slab (one subject:
there are no patients); docs/DATA.md."""

from __future__ import annotations

import numpy as np

from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import maybe_cached, stratified_choice
from spectral_ray.data.real.minidata import missing_files, percentile_scale, read_label_table, read_nifti, resolve
from spectral_ray.data.real.realmini import as_channels
from spectral_ray.data.registry import register_dataset

__all__ = ["mri_atlas", "STRUCTURES", "structure_mask", "slab_slices", "near_border"]

# atlas structure -> prefixes of its AAL label names (AAL's own lobe grouping)
STRUCTURES = {
    "frontal": ("Precentral", "Frontal", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory", "Rectus"),
    "temporal": ("Temporal", "Heschl", "Hippocampus", "ParaHippocampal", "Amygdala", "Fusiform"),
    "occipital": ("Occipital", "Calcarine", "Cuneus", "Lingual"),
    "cerebellum": ("Cerebelum", "Vermis"),
}


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
    check_grid(size, channels, n, n_all=True)
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
        return ImageDataset(images=as_channels(images, channels), labels=labels,
                            classes=[f"outside_{structure}", f"in_{structure}"], groups=groups)

    if border_mm is not None and not border_mm > 0:
        raise ValueError(f"mri_atlas: border_mm must be > 0 (mm) or None (anywhere in the brain), got {border_mm!r}")
    key = dict(size=size, channels=channels, n=n, seed=seed, structure=structure, border_mm=border_mm, slab=slab, gap=gap,
               percentile=percentile, min_voxels=min_voxels)
    return maybe_cached("mri_atlas", key, paths, cache, build)
