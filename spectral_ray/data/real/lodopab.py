"""LoDoPaB-CT ground-truth slices as a binary target, with labels the user supplies.

LoDoPaB-CT ships no diagnosis, and its slices are shuffled within each part (``_rand_``): their
order says nothing about z, and the list of LIDC-IDRI scans they come from is not published, so
LIDC-IDRI's annotations cannot be carried over. The user's ``labels_csv`` gives the labels,
slice by slice or patient by patient (docs/REAL_DATA.md). Patient ids are LoDoPaB's *absolute*
ids (``patient_ids_rand_<part>.csv``: train < validation < test); ids relative to a part (what
dival's ``get_patient_ids()`` returns by default) are refused where they would collide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from spectral_ray.data.dataset import ImageDataset, check_grid
from spectral_ray.data.real.common import (MAX_MEMORY_MB, binary_labels, check_classes_param, check_memory,
                                           finish, group_ids, maybe_cached, read_csv, require_path, stratified_choice)
from spectral_ray.data.registry import register_dataset

__all__ = ["lodopab_ct", "LODOPAB_SLICES_PER_FILE", "PARTS"]

LODOPAB_SLICES_PER_FILE = 128
PARTS = ("train", "validation", "test")
_FILE_RE = re.compile(r"ground_truth_(train|validation|test)_(\d{3})\.hdf5$")
_RELATIVE_HINT = (
    "LoDoPaB's patient_ids_rand_<part>.csv hold absolute patient ids (train < validation < test); "
    "ids counted from 0 within each part (dival's LoDoPaBDataset.get_patient_ids(), relative=True by "
    "default) must be made absolute: get_patient_ids(relative=False), or add the part's smallest id"
)


@dataclass
class _Slices:
    """The labelled slices a CSV selects: ``files[i][index[i]]`` is slice i."""

    files: list[Path]
    index: list[int]
    patients: list
    labels: np.ndarray
    classes: list[str]
    inputs: list[Path]  # files read to find them (CSV, patient-id files): part of the cache key


def _patient_ids(root: Path, part: str) -> np.ndarray:
    """Absolute patient id of every slice of ``part``, in slice order."""
    p = root / f"patient_ids_rand_{part}.csv"
    if not p.is_file():
        raise FileNotFoundError(
            f"lodopab_ct: {p} not found; it maps each slice of the '{part}' part to a patient "
            "(shipped with LoDoPaB-CT) and is needed when labels_csv has no 'patient' column or is patient-level"
        )
    return np.loadtxt(p, dtype=np.int64, ndmin=1)


def _slice_locations(df, csv: Path, root: Path) -> tuple[list[Path], list[int]]:
    files, idx = [], []
    for f, i in zip(df["file"].astype(str), df["index"]):
        p = Path(f.strip()).expanduser()
        p = p if p.is_absolute() else root / p
        if not _FILE_RE.search(p.name):
            raise ValueError(f"lodopab_ct: {csv} column 'file' value {f!r} is not a ground_truth_<part>_NNN.hdf5 name")
        if float(i) != int(float(i)) or int(float(i)) < 0:
            raise ValueError(f"lodopab_ct: {csv} column 'index' must hold slice numbers >= 0, got {i!r}")
        files.append(p)
        idx.append(int(float(i)))
    return files, idx


def _check_parts_disjoint(patients, parts, csv: Path) -> None:
    """LoDoPaB's parts share no patient: one id in two parts (``parts[i]`` is row i's) is a
    collision of ids counted per part."""
    parts_of: dict = {}
    for pid, part in zip(patients, parts):
        parts_of.setdefault(pid, set()).add(part)
    shared = {pid: sorted(ps) for pid, ps in parts_of.items() if len(ps) > 1}
    if shared:
        some = ", ".join(f"{pid!r} in {ps}" for pid, ps in list(shared.items())[:5])
        raise ValueError(f"lodopab_ct: {csv} column 'patient' gives the same patient to different parts "
                         f"({some}), but LoDoPaB's parts share no patient. {_RELATIVE_HINT}")


def _patients_of_slices(root: Path, files: list[Path], idx: list[int]) -> tuple[list, list[Path]]:
    """Patient of each slice from the shipped patient-id files; and the files read."""
    ids: dict[str, np.ndarray] = {}
    patients = []
    for p, i in zip(files, idx):
        part, num = _FILE_RE.search(p.name).groups()
        if part not in ids:
            ids[part] = _patient_ids(root, part)
        g = int(num) * LODOPAB_SLICES_PER_FILE + i
        if g >= len(ids[part]):
            raise ValueError(f"lodopab_ct: slice {p.name}[{i}] is beyond patient_ids_rand_{part}.csv ({len(ids[part])} slices)")
        patients.append(int(ids[part][g]))
    return patients, [root / f"patient_ids_rand_{part}.csv" for part in ids]


def _slice_level(csv: Path, root: Path, classes) -> _Slices:
    """Rows ``file,index,label[,patient]``: one labelled slice each."""
    df = read_csv(csv, ["file", "index", "label"], "lodopab_ct")
    files, idx = _slice_locations(df, csv, root)
    if "patient" in df.columns:
        if df["patient"].isna().any():
            raise ValueError(f"lodopab_ct: {csv} column 'patient' has empty values")
        patients, read = df["patient"].tolist(), []
        _check_parts_disjoint(patients, [_FILE_RE.search(f.name).group(1) for f in files], csv)
    else:
        patients, read = _patients_of_slices(root, files, idx)
    labels, names = binary_labels(df["label"], csv, "lodopab_ct", classes)
    return _Slices(files, idx, patients, labels, names, [csv] + read)


def _patient_level(csv: Path, root: Path, parts: list[str], classes) -> _Slices:
    """Rows ``patient,label[,part]``: every slice of each listed patient in ``parts``. ``part`` is
    required when more than one part is read: without it a relative id cannot be told apart."""
    required = ["patient", "label"] + (["part"] if len(parts) > 1 else [])
    df = read_csv(csv, required, "lodopab_ct")
    labels_p, names = binary_labels(df["label"], csv, "lodopab_ct", classes)
    pid = group_ids(df["patient"])
    part_col = df["part"].astype(str).str.strip().to_numpy() if "part" in df.columns else np.full(len(df), parts[0])
    bad = sorted(set(part_col) - set(PARTS))
    if bad:
        raise ValueError(f"lodopab_ct: {csv} column 'part' must be one of {', '.join(PARTS)}, found {bad}")
    if len(set(pid.tolist())) != len(pid):
        _check_parts_disjoint(pid.tolist(), part_col.tolist(), csv)
        raise ValueError(f"lodopab_ct: {csv} column 'patient' lists a patient twice (patient-level CSV)")
    out = _Slices([], [], [], np.empty(0, np.int64), names, [csv])
    labels = []
    for part in parts:
        ids = _patient_ids(root, part)
        out.inputs.append(root / f"patient_ids_rand_{part}.csv")
        listed = dict(zip(pid[part_col == part].tolist(), labels_p[part_col == part].tolist()))
        unknown = sorted(set(listed) - set(ids.tolist()))
        if unknown:
            raise ValueError(f"lodopab_ct: {csv} lists patient(s) {unknown[:5]} for part '{part}', but "
                             f"patient_ids_rand_{part}.csv holds ids {ids.min()}–{ids.max()}. {_RELATIVE_HINT}")
        for g in np.flatnonzero(np.isin(ids, list(listed))):
            out.files.append(root / f"ground_truth_{part}_{g // LODOPAB_SLICES_PER_FILE:03d}.hdf5")
            out.index.append(int(g % LODOPAB_SLICES_PER_FILE))
            out.patients.append(int(ids[g]))
            labels.append(listed[int(ids[g])])
    if not out.files:
        raise ValueError(f"lodopab_ct: no slice of the patients in {csv} occurs in parts {parts} (patient_ids_rand_<part>.csv)")
    out.labels = np.asarray(labels, np.int64)
    return out


def _read_slices(files: list[Path], idx: list[int], size: int, channels: int) -> np.ndarray:
    """``(n, channels, size, size)`` float32: slice ``idx[i]`` of HDF5 ``files[i]`` (key ``data``),
    clipped to [0, 1] and resized; each file is opened once."""
    import h5py

    images = np.empty((len(files), channels, size, size), np.float32)
    by_file: dict[Path, list[int]] = {}
    for row, p in enumerate(files):
        by_file.setdefault(p, []).append(row)
    for p, rows in by_file.items():
        with h5py.File(p, "r") as f:
            if "data" not in f:
                raise ValueError(f"lodopab_ct: {p} has no dataset 'data' (keys: {list(f.keys())})")
            data = f["data"]
            if data.ndim != 3:
                raise ValueError(f"lodopab_ct: {p} 'data' must be (slices, H, W), got shape {data.shape}")
            want = sorted({idx[r] for r in rows})
            if want[-1] >= data.shape[0]:
                raise ValueError(f"lodopab_ct: {p} has {data.shape[0]} slices; labels_csv asks for index {want[-1]}")
            block = data[want]
        pos = {s: k for k, s in enumerate(want)}
        for r in rows:
            sl = np.clip(np.asarray(block[pos[idx[r]]], np.float32), 0.0, 1.0)
            images[r] = finish(sl[..., None], size, channels, crop="stretch")
    return images


def _labelled_slices(csv: Path, root: Path, parts: list[str], classes) -> _Slices:
    import pandas as pd

    head = pd.read_csv(csv, nrows=0, skipinitialspace=True).columns.str.strip().tolist()
    if "file" in head or "index" in head:
        return _slice_level(csv, root, classes)
    if "patient" in head:
        return _patient_level(csv, root, parts, classes)
    raise ValueError(f"lodopab_ct: {csv} needs either columns 'file','index','label' (slice-level) or "
                     f"'patient','label','part' (patient-level); found columns {head}")


@register_dataset("lodopab_ct", kind="target", cached=False, paths=["root", "labels_csv"])
def lodopab_ct(
    root=None,
    labels_csv=None,
    *,
    size: int = 64,
    channels: int = 1,
    n: int | None = None,
    seed: int = 0,
    parts: Sequence[str] = PARTS,
    classes: Sequence[str] | None = None,
    max_memory_mb: float | None = MAX_MEMORY_MB,
    cache: bool = True,
) -> ImageDataset:
    """LoDoPaB-CT ground-truth slices (HDF5, key `data`) with binary labels from a user CSV."""
    check_grid(size, channels, n, n_all=True)
    check_classes_param(classes)
    root = require_path(root, "root", "lodopab_ct", kind="dir")
    csv = require_path(labels_csv, "labels_csv", "lodopab_ct", kind="file")
    parts = [parts] if isinstance(parts, str) else list(parts)
    bad = sorted(set(parts) - set(PARTS))
    if bad or not parts:
        raise ValueError(f"lodopab_ct: parts must be among {', '.join(PARTS)}, got {bad or parts}")
    s = _labelled_slices(csv, root, parts, classes)
    keep = stratified_choice(s.labels, n, np.random.default_rng([seed, 11])) if n is not None else np.arange(len(s.labels))
    files, idx = [s.files[i] for i in keep], [s.index[i] for i in keep]
    labels, groups = s.labels[keep], group_ids(s.patients)[keep]
    check_memory(len(keep), channels, size, max_memory_mb, "lodopab_ct", "Pass n to take a seeded subset of slices, or raise max_memory_mb.")
    used = sorted(set(files))
    for p in used:
        if not p.is_file():
            raise FileNotFoundError(f"lodopab_ct: HDF5 file not found: {p}")
    key = dict(root=str(root.resolve()), labels_csv=str(csv.resolve()), size=size, channels=channels, n=n, seed=seed,
               parts=parts, classes=None if classes is None else list(classes))

    def build() -> ImageDataset:
        images = _read_slices(files, idx, size, channels)
        return ImageDataset(images=images, labels=labels, classes=list(s.classes), groups=groups)

    return maybe_cached("lodopab_ct", key, s.inputs + used, cache, build)
