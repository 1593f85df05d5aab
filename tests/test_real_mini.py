"""The real-mini readers and datasets on small files made here, the data script's manifest and
errors, and (slow) the data script plus a 2-trial slice of sweeps/real-mini.yaml on the real files."""

from __future__ import annotations

import io
import os
import plistlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spectral_ray.data import get_dataset, missing_paths
from spectral_ray.data.real import minidata
from spectral_ray.data.real.minidata import (FILES, PHOTOGRAPHS, hu_window, percentile_scale, read_invesalius,
                                             read_label_table, read_nifti)
from spectral_ray.data.real.ct_head import ct_tiles
from spectral_ray.data.real.mri_atlas import slab_slices
from spectral_ray.data.real.realmini import tile_origins

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "real-mini-data.sh"


# ----------------------------------------------------------------------------- fabricated files


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_inv3(path: Path, hu: np.ndarray, mask: np.ndarray | None = None, *, matrix_bytes: bytes | None = None) -> Path:
    """An InVesalius 3 project as the program writes it: a gzip tar of one folder."""
    main = {"format_version": 1, "modality": "CT", "name": "fabricated", "spacing": [0.5, 0.5, 2.0],
            "window_level": 40.0, "window_width": 400.0,
            "matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(hu.shape)},
            "masks": {"0": "mask_0.plist"} if mask is not None else {}}
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "tmpabc/main.plist", plistlib.dumps(main))
        _add(tar, "tmpabc/matrix.dat", hu.astype("<i2").tobytes() if matrix_bytes is None else matrix_bytes)
        if mask is not None:
            big = np.zeros(tuple(s + 1 for s in mask.shape), np.uint8)
            big[0] = 1  # InVesalius' per-slice flags live in the border
            big[1:, 1:, 1:] = np.where(mask, 255, 0)
            _add(tar, "tmpabc/mask_0.plist", plistlib.dumps({"name": "bone", "mask_file": "mask_0.dat",
                                                               "mask_shape": list(big.shape), "threshold_range": [226, 3071]}))
            _add(tar, "tmpabc/mask_0.dat", big.tobytes())
    return path


def write_nifti(path: Path, arr: np.ndarray, affine=None) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


def head_ct(shape=(8, 160, 160)) -> np.ndarray:
    """Air with a disc of 'tissue' whose HU encodes the slice (z·10) for checking."""
    z, y, x = np.indices(shape)
    hu = np.full(shape, -1000, np.int16)
    inside = (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (0.45 * shape[1]) ** 2
    hu[inside] = (z * 10)[inside]
    return hu


# ----------------------------------------------------------------------------- readers


def test_read_invesalius_volume_spacing_and_masks(tmp_path):
    hu = np.random.default_rng(0).integers(-1024, 3000, (5, 12, 10)).astype(np.int16)
    mask = hu > 226
    vol = read_invesalius(make_inv3(tmp_path / "p.inv3", hu, mask))
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.hu.dtype == np.int16 and vol.spacing == (0.5, 0.5, 2.0) and vol.window == (40.0, 400.0)
    assert vol.modality == "CT" and vol.name == "fabricated"
    np.testing.assert_array_equal(vol.masks["bone"], mask)  # the flag border is dropped
    assert vol.thresholds["bone"] == (226.0, 3071.0)


def test_read_invesalius_rejects_bad_files(tmp_path):
    (tmp_path / "x.inv3").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a tar archive"):
        read_invesalius(tmp_path / "x.inv3")
    bad = make_inv3(tmp_path / "short.inv3", np.zeros((2, 4, 4), np.int16), matrix_bytes=b"\0" * 10)
    with pytest.raises(ValueError, match=r"matrix.dat holds 10 bytes.*needs 64"):
        read_invesalius(bad)
    with tarfile.open(tmp_path / "empty.inv3", "w:gz") as tar:
        _add(tar, "a/readme.txt", b"hello")
    with pytest.raises(ValueError, match="expected one main.plist"):
        read_invesalius(tmp_path / "empty.inv3")


def test_read_nifti_reorients_to_ras(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    las = np.diag([-2.0, 2.0, 2.0, 1.0])  # x runs right → left
    got, affine, zooms = read_nifti(write_nifti(tmp_path / "v.nii.gz", arr, las))
    np.testing.assert_array_equal(got, arr[::-1])
    assert affine[0, 0] > 0 and zooms == (2.0, 2.0, 2.0)
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read as NIfTI"):
        read_nifti(tmp_path / "bad.nii.gz")


def test_label_table_and_intensity_rules(tmp_path):
    (tmp_path / "a.txt").write_text("1 Frontal_Sup_L 2101\n2 Temporal_Mid_R 8202\n\n")
    assert read_label_table(tmp_path / "a.txt") == {1: "Frontal_Sup_L", 2: "Temporal_Mid_R"}
    (tmp_path / "b.txt").write_text("one Frontal\n")
    with pytest.raises(ValueError, match="line 1"):
        read_label_table(tmp_path / "b.txt")
    # the lab's window is [-1200, 800] HU: -1200 -> 0, -200 -> 0.5, 800 and above -> 1
    np.testing.assert_allclose(hu_window(np.array([-2000, -1200, -200, 800, 3000])), [0, 0, 0.5, 1, 1])
    from spectral_ray.artifacts import LAB_PHOTON_NOISE

    assert minidata.LAB_HU_WINDOW == tuple(LAB_PHOTON_NOISE["disp_window"]) == (-1200.0, 800.0)
    v = np.concatenate([np.zeros(5), np.linspace(0, 200, 995)])
    s = percentile_scale(v, 99.5)
    assert s.min() == 0 and s.max() == 1 and abs(np.percentile(s, 99.5) - 1) < 1e-4
    with pytest.raises(ValueError, match="percentile"):
        percentile_scale(v, 0)


# ----------------------------------------------------------------------------- datasets


def test_tile_origins_never_overlap():
    o = tile_origins(130, 200, 64, offset=32)
    assert o == [(32, 32), (32, 96)]
    cover = np.zeros((130, 200), int)
    for y, x in tile_origins(130, 200, 64):
        cover[y: y + 64, x: x + 64] += 1
    assert cover.max() == 1


def test_medical_real_tiles_are_voxel_disjoint_with_levels(tmp_path):
    hu = head_ct()
    path = make_inv3(tmp_path / "head.inv3", hu)
    ds = get_dataset("medical_real", volume=str(path), size=32, levels=4, min_body=0.25, cache=False)
    zs, origins = ct_tiles(hu, 32, 0.25)
    assert len(ds) == len(zs) and ds.images.shape[1:] == (1, 32, 32)
    for z in np.unique(zs):  # within a slice no voxel is in two tiles
        cover = np.zeros(hu.shape[1:], int)
        for y, x in origins[zs == z]:
            cover[y: y + 32, x: x + 32] += 1
        assert cover.max() == 1
    # level = which quarter of the slices; the tissue HU (z·10) through the lab's window tells z
    tissue = ds.images[:, 0].max(axis=(1, 2))
    z_of = np.round((tissue * 2000 - 1200) / 10).astype(int)
    np.testing.assert_array_equal(ds.labels, np.minimum(z_of * 4 // 8, 3))
    assert ds.classes == ["level1of4", "level2of4", "level3of4", "level4of4"] and ds.groups is None
    with pytest.raises(ValueError, match="distinct patches"):
        get_dataset("medical_real", volume=str(path), size=32, n=len(zs) + 1, cache=False)


def test_natural_real_tiles_are_distinct_regions(tmp_path):
    rng = np.random.default_rng(0)
    for k, name in enumerate(PHOTOGRAPHS):
        Image.fromarray(rng.integers(0, 256, (70 + k, 100, 3), dtype=np.uint8)).save(tmp_path / f"{name}.jpg", quality=95)
    ds = get_dataset("natural_real", folder=str(tmp_path), size=32, short_side=None, cache=False)
    assert len(ds) == 12 * 2 * 3 and np.bincount(ds.labels).tolist() == [6] * 12
    flat = ds.images.reshape(len(ds), -1)
    assert len(np.unique(flat, axis=0)) == len(ds)  # no tile repeats
    three = get_dataset("natural_real", folder=str(tmp_path), size=32, channels=3, n=24, short_side=None, cache=False)
    assert three.images.shape == (24, 3, 32, 32) and np.bincount(three.labels).tolist() == [2] * 12
    (tmp_path / "Wood.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="Wood.jpg"):
        get_dataset("natural_real", folder=str(tmp_path), size=32, cache=False)


def _atlas_files(tmp_path):
    """A 'brain' (label 2 = Temporal) whose front (y > 40) is labelled 1 (Frontal); T1 = x + 100·y."""
    shape = (64, 64, 40)
    x, y, _ = np.indices(shape)
    brain = (x - 32) ** 2 + (y - 32) ** 2 < 28 ** 2
    atlas = np.where(brain, np.where(y > 40, 1, 2), 0).astype(np.uint8)
    t1 = (1 + x + 100 * y).astype(np.float32)
    (tmp_path / "labels.txt").write_text("1 Frontal_Sup_L 2101\n2 Temporal_Mid_L 8201\n")
    return (write_nifti(tmp_path / "t1.nii.gz", t1), write_nifti(tmp_path / "atlas.nii.gz", atlas), tmp_path / "labels.txt",
            t1, atlas)


def test_mri_atlas_labels_are_the_centre_voxel_and_groups_are_slabs(tmp_path):
    t1p, ap, lp, t1, atlas = _atlas_files(tmp_path)
    ds = get_dataset("mri_atlas", t1=str(t1p), atlas=str(ap), atlas_labels=str(lp), size=16, n=200, slab=8, gap=3,
                     min_voxels=10, percentile=100, cache=False)
    assert ds.classes == ["outside_frontal", "in_frontal"] and np.bincount(ds.labels).tolist() == [100, 100]
    # the centre pixel (8, 8) shows voxel (x, y): t1 = 1 + x + 100 y, scaled to [0, 1] by min 1 and max
    span = t1.max() - 1
    centre = ds.images[:, 0, 8, 8] * span + 1
    yy, xx = np.divmod(np.round(centre - 1).astype(int), 100)
    np.testing.assert_array_equal(ds.labels, (yy > 40).astype(int))
    assert atlas[xx, yy, 0].all()  # every centre is in the brain
    assert np.abs(yy - 40.5).max() <= 12.5  # and within border_mm = 12 of the frontal border (y = 40.5)
    # the same patch one row up is one voxel further anterior (rows run anterior → posterior)
    np.testing.assert_allclose((ds.images[:, 0, 7, 8] - ds.images[:, 0, 8, 8]) * span, 100, atol=1e-2)
    assert set(np.unique(ds.groups)) <= set(range(5)) and len(np.unique(ds.groups)) == 5
    anywhere = get_dataset("mri_atlas", t1=str(t1p), atlas=str(ap), atlas_labels=str(lp), size=16, n=200,
                           border_mm=None, min_voxels=10, percentile=100, cache=False)
    y_any = np.round(anywhere.images[:, 0, 8, 8] * span).astype(int) // 100
    assert np.abs(y_any - 40.5).max() > 12.5 and np.array_equal(anywhere.labels, (y_any > 40).astype(int))
    assert slab_slices(np.ones(20, bool), 8, 3) == [(0, [0, 1, 2, 3, 4]), (1, [8, 9, 10, 11, 12]), (2, [16, 17, 18, 19])]
    with pytest.raises(ValueError, match="structure must be one of 'frontal'"):
        get_dataset("mri_atlas", t1=str(t1p), atlas=str(ap), atlas_labels=str(lp), structure="insula", cache=False)
    with pytest.raises(ValueError, match="gap < slab"):
        get_dataset("mri_atlas", t1=str(t1p), atlas=str(ap), atlas_labels=str(lp), slab=4, gap=4, cache=False)


def test_mri_atlas_refuses_an_atlas_on_another_grid(tmp_path):
    t1p, _, lp, _, atlas = _atlas_files(tmp_path)
    shifted = np.eye(4)
    shifted[0, 3] = 5.0  # same shape, origin 5 mm away
    other = write_nifti(tmp_path / "shifted.nii.gz", atlas, shifted)
    with pytest.raises(ValueError, match="same voxel grid"):
        get_dataset("mri_atlas", t1=str(t1p), atlas=str(other), atlas_labels=str(lp), size=16, cache=False)


# ----------------------------------------------------------------------------- script and validation


def _manifest() -> list[tuple[str, str, str, str]]:
    text = SCRIPT.read_text()
    block = re.search(r"MANIFEST='\n(.*?)\n'", text, re.S).group(1)
    return [tuple(line.split("|")) for line in block.splitlines() if line.strip()]


def test_script_manifest_holds_every_default_file():
    rows = _manifest()
    names = {r[2] for r in rows}
    for key, rel in FILES.items():
        if key == "photos":
            assert {f"{rel}/{p}.jpg" for p in PHOTOGRAPHS} <= names
        else:
            assert rel in names, key
    assert all(re.fullmatch(r"[0-9a-f]{64}", r[3]) for r in rows)


def test_validate_names_the_script_when_files_are_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path / "empty"))
    msgs = missing_paths("mri_atlas", {})
    assert len(msgs) == 3 and all("scripts/real-mini-data.sh" in m for m in msgs)
    assert missing_paths("mri_atlas", {"t1": "/nonexistent/t1.nii"})[0] == "mri_atlas: t1 not found: /nonexistent/t1.nii"
    from spectral_ray.cli import main

    assert main(["validate", str(REPO / "sweeps/real-mini.yaml")]) != 0
    with pytest.raises(FileNotFoundError, match="real-mini-data.sh"):
        get_dataset("medical_real", cache=False)


def _fake_bin(tmp_path: Path, apt_get: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\n" + apt_get)
    (bin_dir / "apt-get").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_script_reports_a_package_it_cannot_download(tmp_path):
    env = _fake_bin(tmp_path, 'case "$1" in update) exit 0;; *) echo "E: Unable to locate package $2" >&2; exit 100;; esac\n')
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "package 'invesalius-examples' could not be downloaded" in r.stderr and "Unable to locate" in r.stderr


def test_script_rejects_a_file_with_the_wrong_checksum(tmp_path):
    """A package whose file differs from the recorded sum is refused; nothing is installed."""
    pkg = tmp_path / "pkgroot"
    member = pkg / "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
    member.parent.mkdir(parents=True)
    member.write_bytes(b"tampered")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: invesalius-examples\nVersion: 1\nArchitecture: all\n"
                                         "Maintainer: t <t@t>\nDescription: t\n")
    deb = tmp_path / "invesalius-examples_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    env = _fake_bin(tmp_path, f'cp "{deb}" .\n')
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "checksum mismatch for" in r.stderr and "Cranium.inv3" in r.stderr
    assert not (tmp_path / "data/ct/Cranium.inv3").exists()


# ----------------------------------------------------------------------------- slow: the real files


SLICE = ["--set", "backbone={cases: [{source: natural_real, edit_strength: 0, seed: 0}, "
                  "{source: medical_real, edit_strength: 0, seed: 0}]}",
         "--set", "degradation=0.5", "--set", "fold=0", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_real_mini_data_script_then_a_two_trial_slice(tmp_path):
    """The data script (into the data cache; a no-op the second time), the real datasets' sizes,
    then 2 trials of sweeps/real-mini.yaml on the real files, both TERMINATED with AUCs."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    first = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    ct = get_dataset("medical_real")
    assert len(ct) == 757 and ct.classes[0] == "level1of4"
    mri = get_dataset("mri_atlas")
    assert len(mri) == 800 and len(np.unique(mri.groups)) >= 10
    cli = [sys.executable, "-m", "spectral_ray.cli"]
    assert subprocess.run(cli + ["validate", str(REPO / "sweeps/real-mini.yaml")], env=env, timeout=300).returncode == 0
    run = subprocess.run(cli + ["sweep", str(REPO / "sweeps/real-mini.yaml"), "--storage", str(tmp_path / "results"),
                                "--set", f"store={tmp_path / 'store'}", *SLICE],
                         env=env, capture_output=True, text=True, timeout=1400, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    from analysis.collect import collect

    trials = collect(tmp_path / "results" / "real-mini").trials
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all(), trials[["status", "error"]]
    assert set(trials["target"]) == {"mri_atlas"} and set(trials["source"]) == {"natural_real", "medical_real"}
    assert trials["iid_auc"].between(0, 1).all() and trials["ood_auc"].between(0, 1).all()
