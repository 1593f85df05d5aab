"""Real-data readers on miniature files fabricated in the published formats.

ImageNet/RadImageNet class folders (PNG + JPEG, 8/16 bit, gray + RGB), LoDoPaB-CT HDF5
(`ground_truth_<part>_NNN.hdf5`, key `data`, 362x362 slices) + patient_ids_rand_<part>.csv,
KneeMRI pickled uint16 volumes + metadata.csv, and the generic CSV target (folder and .npz).
"""

import os
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spectral_ray.data import get_dataset, missing_paths
from spectral_ray.data.real import FolderImageDataset, common, make_loader

torch.set_num_threads(1)


def _smooth(rng, h, w):
    """A smooth random field in [0.1, 0.9] (something a resize should preserve)."""
    small = rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(0.1 + 0.8 * np.asarray(im), 0.0, 1.0)


def _save(path, arr, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "rgb":
        Image.fromarray((np.stack([arr, arr[::-1], arr[:, ::-1]], -1) * 255).astype(np.uint8)).save(path)
    elif kind == "gray":
        Image.fromarray((arr * 255).astype(np.uint8)).save(path)
    elif kind == "gray16":
        Image.fromarray((arr * 65535).astype(np.uint16)).save(path)  # 16-bit PNG ("I;16")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "train"
    rng = np.random.default_rng(0)
    counts = {"n01440764": 5, "n01443537": 4, "n01484850": 3}
    for c, k in counts.items():
        for i in range(k):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            a = _smooth(rng, h, w)
            if i % 3 == 0:
                _save(root / c / f"{c}_{i}.JPEG", a, "rgb")
            elif i % 3 == 1:
                _save(root / c / f"{c}_{i}.png", a, "gray")
            else:
                _save(root / c / f"{c}_{i}.png", a, "rgb")
    (root / "n01440764" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def radimagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("radimagenet") / "radiology_ai"
    rng = np.random.default_rng(1)
    spec = {("CT", "lung", "nodule"): 3, ("CT", "lung", "normal"): 4, ("MR", "knee", "acl pathology"): 2, ("US", "ovary", "normal"): 3}
    for parts, k in spec.items():
        for i in range(k):
            kind = ("gray", "gray16", "rgb")[i % 3]
            ext = ".png" if kind != "rgb" else ".jpg"
            _save(root.joinpath(*parts) / f"img{i}{ext}", _smooth(rng, 48, 48), kind)
    return root


LODO_PATIENTS = {"train": [101, 101, 102, 102, 103, 103], "validation": [201, 201, 202, 202], "test": [301, 301, 302, 302]}
LODO_LABEL = {101: 0, 102: 1, 103: 1, 201: 0, 202: 1, 301: 0, 302: 1}


@pytest.fixture(scope="module")
def lodopab_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lodopab")
    rng = np.random.default_rng(2)
    for part, ids in LODO_PATIENTS.items():
        data = np.stack([_smooth(rng, 362, 362) for _ in ids]).astype(np.float32)
        with h5py.File(root / f"ground_truth_{part}_000.hdf5", "w") as f:
            f.create_dataset("data", data=data)
        np.savetxt(root / f"patient_ids_rand_{part}.csv", np.asarray(ids), fmt="%d")
    rows = []
    for part, ids in LODO_PATIENTS.items():
        for i, p in enumerate(ids):
            rows.append(dict(file=f"ground_truth_{part}_000.hdf5", index=i, label=LODO_LABEL[p], patient=f"P{p}"))
    pd.DataFrame(rows).to_csv(root / "slices.csv", index=False)
    pd.DataFrame(rows).drop(columns="patient").to_csv(root / "slices_nopatient.csv", index=False)
    part_of = {p: part for part, ids in LODO_PATIENTS.items() for p in ids}
    pd.DataFrame([dict(patient=p, label=l, part=part_of[p]) for p, l in LODO_LABEL.items()]).to_csv(root / "patients.csv", index=False)
    return root


KNEE_EXAMS = [  # examId, aclDiagnosis, roi (x, y, z, h, w, d)
    (329637, 0, (10, 12, 2, 20, 24, 3)),
    (390116, 1, (8, 6, 1, 30, 18, 2)),
    (404663, 2, (20, 20, 4, 16, 16, 4)),
    (412222, 0, (0, 0, 0, 32, 40, 2)),
    (455000, 2, (5, 9, 3, 22, 26, 3)),
    (471234, 0, (12, 4, 2, 24, 24, 2)),
]
KNEE_SHAPE = (8, 48, 56)  # (slices, H, W), as the real pickles: z first


def _write_knee(root, exams=KNEE_EXAMS, value_inside=3000, value_outside=200):
    rows = []
    for k, (exam, diag, (x, y, z, h, w, d)) in enumerate(exams):
        vol = np.full(KNEE_SHAPE, value_outside, np.uint16)
        vol[:, y : y + h, x : x + w] = value_inside
        vol[z : z + d, y : y + h, x : x + w] = value_inside + 10 * np.arange(d)[:, None, None]
        fname = f"{exam}-{k + 1}.pck"
        folder = root / f"vol{k % 2 + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / fname, "wb") as f:
            pickle.dump(vol, f, protocol=2)
        rows.append(dict(examId=exam, seriesNo=k + 1, aclDiagnosis=diag, kneeLR=k % 2, roiX=x, roiY=y, roiZ=z,
                         roiHeight=h, roiWidth=w, roiDepth=d, volumeFilename=fname))
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="module")
def knee_root(tmp_path_factory):
    return _write_knee(tmp_path_factory.mktemp("kneemri"))


@pytest.fixture(scope="module")
def csv_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("csvtarget")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        p = f"imgs/case{i:02d}.png" if i % 2 else f"imgs/case{i:02d}.jpg"
        _save(root / p, _smooth(rng, 40, 52), "gray" if i % 3 else "rgb")
        rows.append(dict(path=p, label=["benign", "malignant"][i % 2], patient=f"pt{i // 2}"))
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    arr = (np.stack([_smooth(rng, 30, 30) for _ in range(12)]) * 255).astype(np.uint8)
    np.savez(root / "images.npz", images=arr, extra=arr[0])
    pd.DataFrame([dict(path=i, label=i % 2, patient=i // 3) for i in range(12)]).to_csv(root / "npz.csv", index=False)
    return root


# ----------------------------------------------------------------------------- sources


def test_imagenet_folder_shapes_classes_subsets(imagenet_root):
    ds = get_dataset("imagenet_folder", root=str(imagenet_root), size=32, channels=3)
    assert ds.images.shape == (12, 3, 32, 32) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.groups is None
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert ds.classes == ["n01440764", "n01443537", "n01484850"]
    assert np.bincount(ds.labels).tolist() == [5, 4, 3]
    sub = get_dataset("imagenet_folder", root=str(imagenet_root), size=32, per_class=2, seed=1)
    assert np.bincount(sub.labels).tolist() == [2, 2, 2] and sub.images.shape == (6, 1, 32, 32)
    again = get_dataset("imagenet_folder", root=str(imagenet_root), size=32, per_class=2, seed=1)
    np.testing.assert_array_equal(sub.images, again.images)
    other = [get_dataset("imagenet_folder", root=str(imagenet_root), size=32, per_class=2, seed=s).images for s in range(2, 6)]
    assert any(not np.array_equal(o, sub.images) for o in other)  # the choice depends on the seed
    total = get_dataset("image_folder", root=str(imagenet_root), size=16, n=6)
    assert len(total) == 6 and np.bincount(total.labels, minlength=3).min() >= 1


def test_channel_conversion_and_16bit(tmp_path):
    root = tmp_path / "flat"
    (root / "red").mkdir(parents=True)
    (root / "gray").mkdir()
    (root / "deep").mkdir()
    Image.fromarray(np.full((20, 30, 3), [255, 0, 0], np.uint8)).save(root / "red" / "a.png")
    Image.fromarray(np.full((24, 24), 128, np.uint8)).save(root / "gray" / "a.jpg", quality=100)
    Image.fromarray(np.full((24, 24), 30000, np.uint16)).save(root / "deep" / "a.png")
    rgb = get_dataset("image_folder", root=str(root), size=16, channels=3)
    gray = get_dataset("image_folder", root=str(root), size=16, channels=1)
    by = {c: i for i, c in enumerate(rgb.classes)}
    red3 = rgb.images[rgb.labels == by["red"]][0]
    np.testing.assert_allclose(red3[:, 8, 8], [1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(gray.images[gray.labels == by["red"]][0], 0.2125, atol=1e-4)  # RGB -> luminance
    g3 = rgb.images[rgb.labels == by["gray"]][0]
    np.testing.assert_array_equal(g3[0], g3[1]) and np.testing.assert_array_equal(g3[0], g3[2])  # gray -> 3 equal
    np.testing.assert_allclose(g3[0], 128 / 255, atol=2 / 255)
    np.testing.assert_allclose(gray.images[gray.labels == by["deep"]][0], 30000 / 65535, atol=1e-4)  # 16 bit kept


def test_radimagenet_nested_flattened(radimagenet_root):
    ds = get_dataset("radimagenet_folder", root=str(radimagenet_root), size=16, channels=1)
    assert ds.classes == ["CT-lung-nodule", "CT-lung-normal", "MR-knee-acl pathology", "US-ovary-normal"]
    assert np.bincount(ds.labels).tolist() == [3, 4, 2, 3]
    assert ds.images.shape == (12, 1, 16, 16)
    ds3 = get_dataset("image_folder", root=str(radimagenet_root), layout="nested", size=16, channels=3, per_class=2)
    assert np.bincount(ds3.labels).tolist() == [2, 2, 2, 2] and ds3.images.shape[1] == 3


def test_streaming_matches_in_memory(imagenet_root):
    mem = get_dataset("imagenet_folder", root=str(imagenet_root), size=24, channels=3, per_class=3, seed=4)
    fds = FolderImageDataset(imagenet_root, size=24, channels=3, per_class=3, seed=4)
    assert len(fds) == len(mem) and fds.classes == mem.classes
    x, y = fds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 24, 24) and x.dtype == torch.float32 and isinstance(y, int)
    batches = list(make_loader(fds, batch_size=4, shuffle=False, num_workers=1))
    xs = torch.cat([b[0] for b in batches]).numpy()
    ys = torch.cat([b[1] for b in batches]).numpy()
    np.testing.assert_array_equal(xs, mem.images)
    np.testing.assert_array_equal(ys, mem.labels)
    shuffled = torch.cat([b[1] for b in make_loader(fds, batch_size=4, shuffle=True, num_workers=0, seed=3)])
    assert sorted(shuffled.tolist()) == sorted(mem.labels.tolist())
    workers = get_dataset("imagenet_folder", root=str(imagenet_root), size=24, channels=3, per_class=3, seed=4, num_workers=1)
    np.testing.assert_array_equal(workers.images, mem.images)


def test_memory_threshold_points_to_streaming(imagenet_root):
    with pytest.raises(MemoryError, match="FolderImageDataset"):
        get_dataset("imagenet_folder", root=str(imagenet_root), size=64, channels=3, max_memory_mb=0.01)


def test_source_path_errors(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        get_dataset("imagenet_folder", root=str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        get_dataset("imagenet_folder", root=str(empty))
    (empty / "cls_a").mkdir()
    with pytest.raises(ValueError, match=str(empty / "cls_a")):
        get_dataset("imagenet_folder", root=str(empty))
    with pytest.raises(ValueError, match="root"):
        get_dataset("radimagenet_folder")
    bad = tmp_path / "bad" / "cls"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="broken.png"):
        get_dataset("image_folder", root=str(bad.parent))


def test_missing_paths_for_validation(tmp_path, lodopab_root):
    assert missing_paths("lodopab_ct", dict(root=str(lodopab_root), labels_csv=str(lodopab_root / "slices.csv"))) == []
    msgs = missing_paths("lodopab_ct", dict(root=str(tmp_path / "x")))
    assert any("labels_csv" in m and "required" in m for m in msgs) and any(str(tmp_path / "x") in m for m in msgs)
    assert missing_paths("knee_mri", {}) == ["knee_mri: parameter 'root' is required (a path); see docs/REAL_DATA.md"]


# ----------------------------------------------------------------------------- LoDoPaB-CT


def test_lodopab_slice_csv(lodopab_root):
    ds = get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(lodopab_root / "slices.csv"), size=32, cache=False)
    assert ds.images.shape == (14, 1, 32, 32) and ds.images.dtype == np.float32
    assert ds.labels.tolist() == [LODO_LABEL[p] for part in LODO_PATIENTS.values() for p in part]
    assert ds.groups.dtype == np.int64 and len(np.unique(ds.groups)) == 7
    # a slice equals the HDF5 slice resized
    with h5py.File(lodopab_root / "ground_truth_validation_000.hdf5", "r") as f:
        assert f["data"].shape == (4, 362, 362)
        ref = common.resize_plane(f["data"][3], 32)
    np.testing.assert_allclose(ds.images[6 + 3, 0], np.clip(ref, 0, 1), atol=1e-6)
    ds3 = get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(lodopab_root / "slices.csv"), size=16, channels=3, n=7, cache=False)
    assert ds3.images.shape == (7, 3, 16, 16) and set(ds3.labels.tolist()) == {0, 1}


def test_lodopab_patient_ids_from_lodopab_files(lodopab_root):
    a = get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(lodopab_root / "slices_nopatient.csv"), size=16, cache=False)
    assert a.groups.tolist() == [p for part in LODO_PATIENTS.values() for p in part]
    b = get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(lodopab_root / "patients.csv"), size=16, cache=False)
    assert sorted(zip(b.groups.tolist(), b.labels.tolist())) == sorted(zip(a.groups.tolist(), a.labels.tolist()))
    c = get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(lodopab_root / "patients.csv"), size=16, parts=["test"], cache=False)
    assert sorted(set(c.groups.tolist())) == [301, 302]


def test_lodopab_patient_level_needs_the_part_with_several_parts(lodopab_root, tmp_path):
    csv = tmp_path / "nopart.csv"
    pd.read_csv(lodopab_root / "patients.csv").drop(columns="part").to_csv(csv, index=False)
    with pytest.raises(ValueError, match="'part'"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(csv), size=16, cache=False)
    with pytest.raises(ValueError, match=r"\[101, 102, 103, 301, 302\] for part 'validation'"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(csv), size=16, parts="validation", cache=False)
    df = pd.read_csv(csv)
    df[df.patient.isin([201, 202])].to_csv(csv, index=False)
    one = get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(csv), size=16, parts="validation", cache=False)
    assert sorted(set(one.groups.tolist())) == [201, 202]  # one part: every row is of that part


def test_lodopab_relative_patient_ids_are_refused(lodopab_root, tmp_path):
    # dival's get_patient_ids() counts from 0 in each part by default: validation patient 0 would
    # silently be read as train patient 0. LoDoPaB's own files hold absolute ids (here 101.. / 201.. / 301..).
    rel = tmp_path / "relative.csv"
    pd.DataFrame(dict(patient=[0, 1, 0, 1], label=[0, 1, 0, 1], part=["train", "train", "validation", "validation"])).to_csv(rel, index=False)
    with pytest.raises(ValueError, match=r"same patient to different parts.*relative=False"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(rel), size=16, cache=False)
    pd.DataFrame(dict(patient=[0, 1, 2], label=[0, 1, 1], part=["train"] * 3)).to_csv(rel, index=False)
    with pytest.raises(ValueError, match=r"part 'train'.*101–103.*relative=False"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(rel), size=16, cache=False)
    # slice-level rows naming their patients: one id on slices of two parts cannot be LoDoPaB's
    rows = [dict(file=f"ground_truth_{part}_000.hdf5", index=i, label=i % 2, patient=i // 2)
            for part in ("train", "validation") for i in range(4)]
    pd.DataFrame(rows).to_csv(rel, index=False)
    with pytest.raises(ValueError, match=r"different parts.*\['train', 'validation'\].*absolute"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(rel), size=16, cache=False)


def test_lodopab_cache_keyed_by_mtime(lodopab_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path / "cache"))
    csv = tmp_path / "labels.csv"
    pd.read_csv(lodopab_root / "slices.csv").to_csv(csv, index=False)
    kw = dict(root=str(lodopab_root), labels_csv=str(csv), size=16)
    a = get_dataset("lodopab_ct", **kw)
    assert len(list((tmp_path / "cache").glob("lodopab_ct-*.npz"))) == 1
    b = get_dataset("lodopab_ct", **kw)
    np.testing.assert_array_equal(a.images, b.images)
    df = pd.read_csv(csv)
    df.loc[0, "label"] = 1 - df.loc[0, "label"]
    df.to_csv(csv, index=False)
    os.utime(csv, ns=(os.stat(csv).st_atime_ns, os.stat(csv).st_mtime_ns + 10**9))
    c = get_dataset("lodopab_ct", **kw)
    assert c.labels[0] == 1 - a.labels[0]  # the edited CSV was re-read, not served from the cache
    assert len(list((tmp_path / "cache").glob("lodopab_ct-*.npz"))) == 2


def test_lodopab_errors(lodopab_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        get_dataset("lodopab_ct", root=str(tmp_path / "nowhere"), labels_csv=str(lodopab_root / "slices.csv"))
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(tmp_path / "labels.csv"))
    bad = tmp_path / "bad.csv"
    pd.DataFrame(dict(file=["ground_truth_train_000.hdf5"], index=[0], patient=[1])).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="'label'"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(bad), cache=False)
    pd.DataFrame(dict(file=["ground_truth_train_000.hdf5"], label=[0], patient=[1])).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="'index'"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(bad), cache=False)
    pd.DataFrame(dict(file=["ground_truth_train_000.hdf5"] * 2, index=[0, 1], label=[0, 2], patient=[1, 1])).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="'label'"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(bad), cache=False)
    pd.DataFrame(dict(file=["ground_truth_train_007.hdf5"], index=[0], label=[0], patient=[1])).to_csv(bad, index=False)
    with pytest.raises(FileNotFoundError, match="ground_truth_train_007.hdf5"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(bad), cache=False)
    pd.DataFrame(dict(file=["ground_truth_train_000.hdf5"], index=[9], label=[0], patient=[1])).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="index 9"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(bad), cache=False)
    other = tmp_path / "other"
    other.mkdir()
    with h5py.File(other / "ground_truth_test_000.hdf5", "w") as f:
        f.create_dataset("images", data=np.zeros((1, 8, 8), np.float32))
    pd.DataFrame(dict(file=["ground_truth_test_000.hdf5"], index=[0], label=[0], patient=[1])).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="'data'"):
        get_dataset("lodopab_ct", root=str(other), labels_csv=str(bad), cache=False)
    pd.DataFrame(dict(foo=[1], label=[0])).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="'patient'"):
        get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(bad), cache=False)


# ----------------------------------------------------------------------------- KneeMRI


def test_knee_mri_shapes_labels_groups(knee_root):
    ds = get_dataset("knee_mri", root=str(knee_root), size=32, cache=False)
    depths = [e[2][5] for e in KNEE_EXAMS]
    assert ds.images.shape == (sum(depths), 1, 32, 32) and ds.images.dtype == np.float32
    want_labels = [int(e[1] >= 1) for e in KNEE_EXAMS for _ in range(e[2][5])]
    assert ds.labels.tolist() == want_labels and ds.classes == ["healthy", "injured"]
    assert ds.groups.tolist() == [e[0] for e in KNEE_EXAMS for _ in range(e[2][5])]
    tear = get_dataset("knee_mri", root=str(knee_root), size=16, task="tear", cache=False)
    assert tear.labels.tolist() == [int(e[1] == 2) for e in KNEE_EXAMS for _ in range(e[2][5])]
    few = get_dataset("knee_mri", root=str(knee_root), size=16, channels=3, slices_per_exam=1, cache=False)
    assert few.images.shape == (len(KNEE_EXAMS), 3, 16, 16) and few.groups.tolist() == [e[0] for e in KNEE_EXAMS]
    sub = get_dataset("knee_mri", root=str(knee_root), size=16, n=5, seed=3, cache=False)
    assert len(sub) == 5 and set(sub.labels.tolist()) == {0, 1}


def test_knee_mri_roi_crop(knee_root):
    # ROI holds value >= 3000 on its slices, outside 200: a tight crop without margin is uniform and
    # bright; the slices follow z (value rises by 10 per slice).
    tight = get_dataset("knee_mri", root=str(knee_root), size=16, margin=0.0, square=False, intensity_percentile=None, cache=False)
    first = tight.images[: KNEE_EXAMS[0][2][5], 0]
    want = np.broadcast_to((3000 + 10 * np.arange(3))[:, None, None] / 4095, (3, 12, 12))
    np.testing.assert_allclose(first[:, 2:-2, 2:-2], want, atol=1e-3)
    wide = get_dataset("knee_mri", root=str(knee_root), size=16, margin=0.5, square=True, cache=False)
    im = wide.images[0, 0]
    assert im[8, 8] > 0.5 and im[0, 0] < 0.2  # background visible around the ROI


def test_knee_mri_errors(knee_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        get_dataset("knee_mri", root=str(tmp_path / "nope"))
    root = _write_knee(tmp_path / "k1")
    (root / "vol02" / f"{KNEE_EXAMS[1][0]}-2.pck").unlink()
    with pytest.raises(FileNotFoundError, match=f"{KNEE_EXAMS[1][0]}-2.pck"):
        get_dataset("knee_mri", root=str(root), cache=False)
    meta = pd.read_csv(knee_root / "metadata.csv").drop(columns="roiDepth")
    meta.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="'roiDepth'"):
        get_dataset("knee_mri", root=str(knee_root), metadata_csv=str(tmp_path / "m.csv"), cache=False)
    meta = pd.read_csv(knee_root / "metadata.csv")
    meta.loc[0, "aclDiagnosis"] = 3
    meta.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="'aclDiagnosis'"):
        get_dataset("knee_mri", root=str(knee_root), metadata_csv=str(tmp_path / "m.csv"), cache=False)
    meta = pd.read_csv(knee_root / "metadata.csv")
    meta.loc[0, "roiZ"] = 7
    meta.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="roiZ"):
        get_dataset("knee_mri", root=str(knee_root), metadata_csv=str(tmp_path / "m.csv"), cache=False)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_knee_mri_malicious_pickle_refused(tmp_path):
    root = _write_knee(tmp_path / "k2")
    victim = root / "vol01" / f"{KNEE_EXAMS[0][0]}-1.pck"
    marker = tmp_path / "executed"
    victim.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        get_dataset("knee_mri", root=str(root), cache=False)
    assert not marker.exists()


# ----------------------------------------------------------------------------- generic CSV


def test_csv_target_folder_and_npz(csv_folder):
    ds = get_dataset("csv_target", csv=str(csv_folder / "labels.csv"), size=16, channels=3, cache=False)
    assert ds.images.shape == (12, 3, 16, 16) and ds.classes == ["benign", "malignant"]
    assert ds.labels.tolist() == [i % 2 for i in range(12)] and ds.groups.tolist() == [i // 2 for i in range(12)]
    flipped = get_dataset("csv_target", csv=str(csv_folder / "labels.csv"), size=16, classes=["malignant", "benign"], cache=False)
    assert flipped.labels.tolist() == [1 - i % 2 for i in range(12)]
    z = get_dataset("csv_target", csv=str(csv_folder / "npz.csv"), npz=str(csv_folder / "images.npz"), size=16, cache=False)
    assert z.images.shape == (12, 1, 16, 16) and z.groups.tolist() == [i // 3 for i in range(12)]
    with np.load(csv_folder / "images.npz") as f:
        ref = common.resize_plane(f["images"][5].astype(np.float32) / 255, 16)
    np.testing.assert_allclose(z.images[5, 0], np.clip(ref, 0, 1), atol=1e-6)


def test_csv_target_lidc_style_hu_crops_with_a_window(tmp_path):
    """The LIDC-IDRI route (docs/REAL_DATA.md): nodule crops saved as .npy in Hounsfield units,
    label from the readers' median malignancy, patient = LIDC-IDRI-NNNN; a fixed HU window maps
    them to [0, 1] (-1000 HU -> 0, 400 HU -> 1), clipped outside."""
    rows = []
    for i in range(8):
        crop = np.full((32, 32), -1000.0, np.float32)  # air
        crop[8:24, 8:24] = 40.0 + 20 * i  # soft-tissue nodule
        crop[0, 0] = 3000.0  # bone/metal: clipped to 1
        np.save(tmp_path / f"nodule{i}.npy", crop.astype(np.int16))
        rows.append(dict(path=f"nodule{i}.npy", label=int(i >= 4), patient=f"LIDC-IDRI-{i // 2:04d}"))
    pd.DataFrame(rows).to_csv(tmp_path / "nodules.csv", index=False)
    ds = get_dataset("csv_target", csv=str(tmp_path / "nodules.csv"), size=32, window=[-1000, 400], crop="stretch", cache=False)
    assert ds.classes == ["negative", "positive"] and ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ds.groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_allclose(ds.images[3, 0, 16, 16], (100 + 1000) / 1400, atol=1e-6)
    np.testing.assert_allclose(ds.images[3, 0, 30, 30], 0.0, atol=1e-6)
    assert ds.images[3, 0, 0, 0] == 1.0
    with pytest.raises(ValueError, match="window"):
        get_dataset("csv_target", csv=str(tmp_path / "nodules.csv"), size=32, window=[400, -1000], cache=False)
    with pytest.raises(ValueError, match="not both"):
        get_dataset("csv_target", csv=str(tmp_path / "nodules.csv"), size=32, window=[-1000, 400], scale="minmax", cache=False)


def test_csv_target_errors(csv_folder, tmp_path):
    df = pd.read_csv(csv_folder / "labels.csv")
    df.drop(columns="patient").to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match="'patient'"):
        get_dataset("csv_target", csv=str(tmp_path / "a.csv"), root=str(csv_folder))
    df.assign(path="imgs/missing.png").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        get_dataset("csv_target", csv=str(tmp_path / "b.csv"), root=str(csv_folder))
    df.assign(label=[0, 1, 2] * 4).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="'label'"):
        get_dataset("csv_target", csv=str(tmp_path / "c.csv"), root=str(csv_folder))
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        get_dataset("csv_target", csv=str(csv_folder / "npz.csv"), npz=str(tmp_path / "nothere.npz"))
    with pytest.raises(ValueError, match="window maps raw array values"):
        get_dataset("csv_target", csv=str(csv_folder / "labels.csv"), window=[0, 255], cache=False)
    with pytest.raises(ValueError, match="scale must be one of auto, minmax"):
        get_dataset("csv_target", csv=str(csv_folder / "labels.csv"), scale="zscore", cache=False)


# ----------------------------------------------------------------------------- one tiny fine-tune per target


def _finetune_steps(ds, steps=3):
    import timm

    from spectral_ray.protocol import make_splits

    splits = make_splits(ds, "band", 0.5, fold=0, seed=0, n_folds=2, test_fraction=0.25)
    assert len(splits.train) > 0 and len(splits.test_ood) > 0
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, in_chans=ds.images.shape[1], num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.from_numpy(splits.train.images)
    y = torch.from_numpy(splits.train.labels)
    model.train()
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    model.eval()
    with torch.no_grad():
        p = model(torch.from_numpy(splits.test_iid.images)).softmax(1)
    assert p.shape == (len(splits.test_iid), 2)


def test_finetune_lodopab(lodopab_root):
    _finetune_steps(get_dataset("lodopab_ct", root=str(lodopab_root), labels_csv=str(lodopab_root / "slices.csv"), size=32, cache=False))


def test_finetune_knee_mri(knee_root):
    _finetune_steps(get_dataset("knee_mri", root=str(knee_root), size=32, channels=3, cache=False))


def test_finetune_csv_target(csv_folder):
    _finetune_steps(get_dataset("csv_target", csv=str(csv_folder / "labels.csv"), size=32, cache=False))


def test_npy_files_in_class_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "x.npy", np.full((20, 20), 1000, np.uint16))
    np.save(tmp_path / "b" / "y.npy", np.full((3, 20, 20), 0.25, np.float32))
    ds = get_dataset("image_folder", root=str(tmp_path), size=16, channels=1)
    np.testing.assert_allclose(ds.images[0], 1000 / 65535, atol=1e-6)
    np.testing.assert_allclose(ds.images[1], 0.25, atol=1e-6)
