"""KneeMRI (Štajduhar et al. 2017): pickled volumes + metadata.csv, ROI slices as a binary
target (healthy vs injured ACL); docs/REAL_DATA.md. Pickles load only through
:mod:`spectral_ray.safe_pickle`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spectral_ray import safe_pickle
from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import (MAX_MEMORY_MB, check_memory, finish, maybe_cached, read_csv,
                                           require_path, stratified_choice)
from spectral_ray.data.registry import register_dataset

__all__ = ["knee_mri", "KNEE_COLUMNS"]

KNEE_COLUMNS = ("examId", "aclDiagnosis", "roiX", "roiY", "roiZ", "roiHeight", "roiWidth", "roiDepth", "volumeFilename")


def _crop_box(y0: int, x0: int, h: int, w: int, margin: float, square: bool) -> tuple[int, int, int, int]:
    cy, cx = y0 + h / 2.0, x0 + w / 2.0
    hh, ww = h * (1 + 2 * margin), w * (1 + 2 * margin)
    if square:
        hh = ww = max(hh, ww)
    hh, ww = max(1, int(round(hh))), max(1, int(round(ww)))
    return int(round(cy - hh / 2.0)), int(round(cx - ww / 2.0)), hh, ww


def _crop_padded(plane: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """plane[y0:y0+h, x0:x0+w] with zeros where the box leaves the image."""
    out = np.zeros((h, w), np.float32)
    H, W = plane.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, H), min(x0 + w, W)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = plane[ys:ye, xs:xe]
    return out


def _index_files(root: Path, names: set[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for n in names:  # the common case: files directly in root or in vol01..vol10
        if (root / n).is_file():
            found[n] = root / n
    if len(found) < len(names):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in filenames:
                if f in names and f not in found:
                    found[f] = Path(dirpath) / f
    return found


TASKS = {  # task -> (is positive(aclDiagnosis), class names)
    "injury": (lambda diag: diag >= 1, ["healthy", "injured"]),
    "tear": (lambda diag: diag == 2, ["intact_or_partial", "complete_tear"]),
}


def _check_options(task, margin, slices_per_exam, intensity_percentile) -> None:
    if task not in TASKS:
        raise ValueError(f"knee_mri: task must be 'injury' (0 vs 1,2) or 'tear' (0,1 vs 2), got {task!r}")
    if not 0 <= margin <= 2:
        raise ValueError(f"knee_mri: margin must be in [0, 2] (fraction of the ROI size per side), got {margin!r}")
    if slices_per_exam is not None and slices_per_exam < 1:
        raise ValueError(f"knee_mri: slices_per_exam must be a positive integer or None, got {slices_per_exam!r}")
    if intensity_percentile is not None and not 0 < intensity_percentile <= 100:
        raise ValueError(f"knee_mri: intensity_percentile must be in (0, 100] or None, got {intensity_percentile!r}")


def _read_metadata(meta: Path):
    """metadata.csv with its integer columns, diagnoses 0/1/2 and ROI sizes >= 1 checked."""
    df = read_csv(meta, KNEE_COLUMNS, "knee_mri")
    for c in KNEE_COLUMNS[:-1]:
        v = np.asarray(df[c].to_numpy(), dtype=np.float64) if df[c].dtype.kind in "iuf" else None
        if v is None or np.any(v != np.round(v)):
            raise ValueError(f"knee_mri: {meta} column {c!r} must hold integers")
    diag = df["aclDiagnosis"].to_numpy().astype(np.int64)
    if not set(np.unique(diag).tolist()) <= {0, 1, 2}:
        raise ValueError(f"knee_mri: {meta} column 'aclDiagnosis' must be 0, 1 or 2, found {sorted(set(diag.tolist()))}")
    for c in ("roiHeight", "roiWidth", "roiDepth"):
        if (df[c] < 1).any():
            raise ValueError(f"knee_mri: {meta} column {c!r} must be >= 1")
    return df


def _roi_slices(df, slices_per_exam: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(metadata row, z) of every ROI slice — the central ``slices_per_exam`` of each exam's
    ``[roiZ, roiZ + roiDepth)`` when given — before any volume is read."""
    rows, zs = [], []
    for r in range(len(df)):
        z0, d = int(df["roiZ"].iloc[r]), int(df["roiDepth"].iloc[r])
        z_range = list(range(z0, z0 + d))
        if slices_per_exam is not None and len(z_range) > slices_per_exam:
            start = (len(z_range) - slices_per_exam) // 2
            z_range = z_range[start : start + slices_per_exam]
        rows += [r] * len(z_range)
        zs += z_range
    return np.asarray(rows), np.asarray(zs)


def _find_volumes(root: Path, wanted: list[str], meta: Path) -> dict[str, Path]:
    found = _index_files(root, set(wanted))
    missing = [f for f in wanted if f not in found]
    if missing:
        raise FileNotFoundError(
            f"knee_mri: {len(missing)} volume file(s) named in {meta} not found under {root}: "
            f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
        )
    return found


def _exam_crops(path: Path, row, z_sel: np.ndarray, margin: float, square: bool, intensity_percentile) -> np.ndarray:
    """``(len(z_sel), h, w)`` float32 in [0, 1]: the exam's ROI slices, cropped and scaled."""
    vol = safe_pickle.load(path)
    if not isinstance(vol, np.ndarray) or vol.ndim != 3 or not np.issubdtype(vol.dtype, np.number):
        raise ValueError(f"knee_mri: {path} must hold one numeric (slices, H, W) array, got "
                         f"{type(vol).__name__}{getattr(vol, 'shape', '')}")
    if z_sel.min() < 0 or z_sel.max() >= vol.shape[0]:
        raise ValueError(f"knee_mri: {path} has {vol.shape[0]} slices; ROI of exam {row['examId']} "
                         f"asks for slices {z_sel.min()}..{z_sel.max()} (roiZ, roiDepth)")
    y0, x0, h, w = _crop_box(int(row["roiY"]), int(row["roiX"]), int(row["roiHeight"]), int(row["roiWidth"]), margin, square)
    crops = np.stack([_crop_padded(np.asarray(vol[z], np.float32), y0, x0, h, w) for z in z_sel])
    if intensity_percentile is None:
        lo, hi = 0.0, 4095.0  # 12-bit scanner range
    else:
        lo, hi = float(crops.min()), float(np.percentile(crops, intensity_percentile))
    crops = (crops - lo) / (hi - lo) if hi > lo else np.zeros_like(crops)
    return np.clip(crops, 0, 1)


@register_dataset("knee_mri", kind="target", cached=False, paths=["root"], optional_paths=["metadata_csv"])
def knee_mri(
    root=None,
    metadata_csv=None,
    *,
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    seed: int = 0,
    task: str = "injury",
    margin: float = 0.1,
    square: bool = True,
    slices_per_exam: int | None = None,
    intensity_percentile: float | None = 99.5,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = True,
) -> ImageDataset:
    """KneeMRI (Stajduhar 2017): pickled volumes + metadata.csv, ROI slices, healthy vs injured ACL."""
    check_grid(size, channels, n, n_all=True)
    _check_options(task, margin, slices_per_exam, intensity_percentile)
    root = require_path(root, "root", "knee_mri", kind="dir")
    meta = require_path(metadata_csv if metadata_csv not in (None, "") else root / "metadata.csv", "metadata_csv", "knee_mri", kind="file")
    df = _read_metadata(meta)
    positive, names = TASKS[task]
    exam_label = positive(df["aclDiagnosis"].to_numpy().astype(np.int64))
    rows, zs = _roi_slices(df, slices_per_exam)
    labels = exam_label[rows].astype(np.int64)
    if n is not None:
        keep = stratified_choice(labels, n, np.random.default_rng([seed, 13]))
        rows, zs, labels = rows[keep], zs[keep], labels[keep]
    check_memory(len(rows), channels, size, max_memory_mb, "knee_mri",
                 "Pass n or slices_per_exam to take fewer slices, or raise max_memory_mb.")
    fnames = df["volumeFilename"].astype(str).str.strip().to_numpy()
    wanted = sorted(set(fnames[np.unique(rows)].tolist()))
    found = _find_volumes(root, wanted, meta)
    groups = df["examId"].to_numpy().astype(np.int64)[rows]
    key = dict(root=str(root.resolve()), metadata_csv=str(meta.resolve()), size=size, channels=channels, n=n, seed=seed,
               task=task, margin=margin, square=square, slices_per_exam=slices_per_exam,
               intensity_percentile=intensity_percentile)

    def build() -> ImageDataset:
        images = np.empty((len(rows), channels, size, size), np.float32)
        for r in np.unique(rows):
            out_rows = np.flatnonzero(rows == r)
            crops = _exam_crops(found[fnames[r]], df.iloc[r], zs[out_rows], margin, square, intensity_percentile)
            for k, o in enumerate(out_rows):
                images[o] = finish(crops[k][..., None], size, channels, crop="stretch")
        return ImageDataset(images=images, labels=labels, classes=list(names), groups=groups)

    return maybe_cached("knee_mri", key, [meta] + [found[f] for f in wanted], cache, build)
