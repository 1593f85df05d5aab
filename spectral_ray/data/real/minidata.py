"""Readers for the real-mini files (docs/DATA.md, "Real pixels"): the InVesalius project of a
head CT, NIfTI volumes (a T1 MRI and its atlas, through nibabel) and the atlas's label table,
plus where ``scripts/real-mini-data.sh`` puts them (:func:`data_dir`).

Intensity rules live here: :func:`hu_window` (the lab's CT display window, the one the photon
noise artifact uses) and :func:`percentile_scale` (MRI: the knee_mri reader's per-volume rule).
"""

from __future__ import annotations

import plistlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from spectral_ray.data.cache import cache_dir

__all__ = ["SCRIPT", "FILES", "PHOTOGRAPHS", "LAB_HU_WINDOW", "InvesaliusVolume", "data_dir", "default_path",
           "missing_files", "read_invesalius", "read_nifti", "read_label_table", "hu_window", "percentile_scale"]

SCRIPT = "scripts/real-mini-data.sh"
# name in the data folder of each file a real-mini dataset reads by default (the script's manifest
# holds the same names with their package and checksum; tests/test_real_mini.py keeps them equal)
FILES = {
    "ct": "ct/Cranium.inv3",
    "t1": "mri/ch2.nii.gz",
    "atlas": "mri/aal.nii.gz",
    "atlas_labels": "mri/aal.nii.txt",
    "photos": "photos",
}
# mate-backgrounds' nature/ folder: the twelve photographs (its other folders are drawings/renders)
PHOTOGRAPHS = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
               "TwoWings", "Wood", "YellowFlower")
# The lab's CT display window in HU: spectral_ray.artifacts.LAB_PHOTON_NOISE["disp_window"] (what
# include_noise.py uses). Written out, not imported: importing artifacts would put it and the
# spectrum code into the real sources' code version, so every change there would retrain their
# backbones; tests/test_real_mini.py keeps the two equal.
LAB_HU_WINDOW = (-1200.0, 800.0)


def data_dir() -> Path:
    """``<dataset cache>/real-mini``: ``$SPECTRAL_RAY_CACHE/real-mini``, by default
    ``~/.cache/spectral-ray/real-mini`` (:func:`spectral_ray.data.cache.cache_dir`)."""
    return cache_dir() / "real-mini"


def default_path(key: str) -> Path:
    """The data folder's file for ``key`` (one of :data:`FILES`)."""
    if key not in FILES:
        raise ValueError(f"unknown real-mini file {key!r}; allowed: {', '.join(FILES)}")
    return data_dir() / FILES[key]


def missing_files(dataset: str, params: dict, defaults: dict[str, str]) -> list[str]:
    """One message per path parameter left unset (``defaults``: parameter → :data:`FILES` key)
    whose default file is absent, naming the script that fetches it. Reads nothing."""
    out = []
    for param, key in defaults.items():
        if params.get(param) not in (None, ""):
            continue  # a given path is checked by the registry's path check
        p = default_path(key)
        if not p.exists():
            out.append(f"{dataset}: {param} defaults to {p}, which is missing; run `bash {SCRIPT}` "
                       "to fetch the real-mini files (docs/DATA.md)")
    return out


def resolve(value, key: str, dataset: str, param: str) -> Path:
    """``value`` as a path, or the default file of ``key``; ``FileNotFoundError`` naming the
    parameter (and the script, for a default) when it does not exist."""
    if value not in (None, ""):
        p = Path(value).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{dataset}: {param} not found: {p}")
        return p
    p = default_path(key)
    if not p.exists():
        raise FileNotFoundError(f"{dataset}: {param} defaults to {p}, which is missing; run `bash {SCRIPT}`")
    return p


# ----------------------------------------------------------------------------- InVesalius


@dataclass
class InvesaliusVolume:
    """A CT volume from an InVesalius 3 project (``.inv3``).

    hu: ``(slices, rows, cols)`` int16 Hounsfield units; spacing: (col, row, slice) mm, as the
    project stores it; window: the project's (level, width) HU; masks: name → ``(slices, rows,
    cols)`` bool (InVesalius keeps masks one voxel larger on each axis, index 0 holding
    per-slice flags: that border is dropped); threshold: name → (low, high) HU the mask was made
    with; name, modality: the project's."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    window: tuple[float, float]
    name: str = ""
    modality: str = ""
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)


def _inv3_members(tar: tarfile.TarFile, path: Path) -> tuple[PurePosixPath, dict]:
    """(folder inside the archive, parsed main.plist)."""
    mains = [m for m in tar.getmembers() if m.isfile() and PurePosixPath(m.name).name == "main.plist"]
    if len(mains) != 1:
        raise ValueError(f"invesalius: {path} is not an InVesalius project (expected one main.plist, found {len(mains)})")
    return PurePosixPath(mains[0].name).parent, plistlib.load(tar.extractfile(mains[0]))


def _inv3_array(tar: tarfile.TarFile, folder: PurePosixPath, filename: str, dtype, shape, path: Path) -> np.ndarray:
    try:
        f = tar.extractfile(str(folder / filename))
    except KeyError:
        raise ValueError(f"invesalius: {path} lacks {filename}, which its main.plist names") from None
    data = f.read()
    dt = np.dtype(dtype).newbyteorder("<")  # InVesalius writes little-endian memmaps
    want = int(np.prod(shape)) * dt.itemsize
    if len(data) != want:
        raise ValueError(f"invesalius: {path}: {filename} holds {len(data)} bytes, its shape {list(shape)} "
                         f"of {dt.name} needs {want}")
    return np.frombuffer(data, dt).reshape(shape).astype(dt.newbyteorder("="))


def read_invesalius(path, *, masks: bool = True) -> InvesaliusVolume:
    """Read an InVesalius 3 project (a gzip tar of ``main.plist``, ``matrix.dat`` and
    ``mask_N.plist``/``.dat``), without extracting it to disk."""
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:*")
    except tarfile.TarError as e:
        raise ValueError(f"invesalius: {path} is not a tar archive: {e}") from None
    with tar:
        folder, main = _inv3_members(tar, path)
        try:
            mat = main["matrix"]
            hu = _inv3_array(tar, folder, mat["filename"], mat["dtype"], tuple(mat["shape"]), path)
            spacing = tuple(float(v) for v in main["spacing"])
        except KeyError as e:
            raise ValueError(f"invesalius: {path}: main.plist has no {e}") from None
        vol = InvesaliusVolume(hu=hu, spacing=spacing, window=(float(main.get("window_level", 0.0)),
                               float(main.get("window_width", 0.0))), name=str(main.get("name", "")),
                               modality=str(main.get("modality", "")))
        for mask_plist in (main.get("masks") or {}).values() if masks else ():
            m = plistlib.load(tar.extractfile(str(folder / mask_plist)))
            arr = _inv3_array(tar, folder, m["mask_file"], np.uint8, tuple(m["mask_shape"]), path)
            vol.masks[str(m["name"])] = arr[1:, 1:, 1:] > 127  # InVesalius: 255 inside, border = flags
            vol.thresholds[str(m["name"])] = tuple(float(v) for v in m.get("threshold_range", (np.nan, np.nan)))
    return vol


# ----------------------------------------------------------------------------- NIfTI


def read_nifti(path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """``(array, affine, voxel size mm)`` of a NIfTI-1/2 file (``.nii`` or ``.nii.gz``), reoriented
    to the closest canonical (RAS+) axes so axis 2 is inferior → superior for any file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for a malformed file
        raise ValueError(f"nifti: {path} cannot be read as NIfTI: {e}") from None
    img = nib.as_closest_canonical(img)
    arr = np.asanyarray(img.dataobj)
    return arr, np.asarray(img.affine), tuple(float(z) for z in img.header.get_zooms()[:3])


def read_label_table(path) -> dict[int, str]:
    """An atlas's label table (MRIcron ``.nii.txt``: ``index name [code]`` per line) → {index: name}."""
    out: dict[int, str] = {}
    for k, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[0].isdigit():
            raise ValueError(f"atlas labels: {path} line {k} must read 'index name', got {line!r}")
        out[int(parts[0])] = parts[1]
    if not out:
        raise ValueError(f"atlas labels: {path} holds no labels")
    return out


# ----------------------------------------------------------------------------- intensities


def hu_window(hu: np.ndarray, window: tuple[float, float] = LAB_HU_WINDOW) -> np.ndarray:
    """HU → [0, 1] float32 through the display window ``(low, high)`` HU, clipped."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) HU with high > low, got {window!r}")
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def percentile_scale(volume: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """MRI intensities → [0, 1] float32: ``(v − min) / (percentile(v) − min)`` over the whole volume,
    clipped (the knee_mri reader's rule, docs/REAL_DATA.md)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    v = np.asarray(volume, np.float32)
    lo, hi = float(v.min()), float(np.percentile(v, percentile))
    if not hi > lo:
        raise ValueError("percentile_scale: the volume is constant")
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)
