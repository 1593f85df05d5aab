"""sweeps/paper.yaml: validation names every missing path; with miniature files fabricated in
the real formats at those paths validation passes, every start loads with its preprocessing, and
a one-trial run of the paper sweep (tiny sizes) completes."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from spectral_ray.cli import main

PAPER = Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"


def test_validate_lists_every_missing_path(capsys):
    assert main(["validate", str(PAPER)]) == 2
    err = capsys.readouterr().err
    assert "7 data/weights path(s) are missing" in err
    for path in ("/data/imagenet/train", "/data/radimagenet/radiology_ai", "/data/weights/resnet50_imagenet.pth",
                 "/data/weights/RadImageNet-ResNet50.pth", "/data/kneemri", "/data/lodopab/labels.csv", "/data/lodopab"):
        assert path in err
    assert "Traceback" not in err


def _lodopab(folder: Path, rng) -> None:
    """ground_truth_train_000.hdf5 (key data, 362x362 in [0, 1]), the shipped patient-id file
    (absolute ids) and a slice-level labels CSV, as docs/REAL_DATA.md describes."""
    folder.mkdir(parents=True)
    n_patients, per_patient = 16, 2
    rows, slices, ids = [], [], []
    for p in range(n_patients):
        label = p % 2
        for _ in range(per_patient):
            x = rng.random((362, 362)).astype(np.float32) * 0.2 + 0.4
            if label:
                x[150:210, 150:210] += 0.3
            slices.append(x)
            ids.append(p)
            rows.append({"file": "ground_truth_train_000.hdf5", "index": len(slices) - 1, "label": label, "patient": p})
    with h5py.File(folder / "ground_truth_train_000.hdf5", "w") as f:
        f.create_dataset("data", data=np.stack(slices))
    np.savetxt(folder / "patient_ids_rand_train.csv", np.asarray(ids), fmt="%d")
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)


def _kneemri(folder: Path, rng) -> None:
    """metadata.csv and pickled uint16 (slices, H, W) volumes in vol01/."""
    (folder / "vol01").mkdir(parents=True)
    rows = []
    for k in range(8):
        vol = (rng.random((6, 40, 40)) * 4095).astype(np.uint16)
        name = f"{300000 + k}-1.pck"
        with open(folder / "vol01" / name, "wb") as f:
            pickle.dump(vol, f, protocol=2)
        rows.append(dict(examId=300000 + k, seriesNo=1, aclDiagnosis=k % 3, kneeLR=0, roiX=5, roiY=5, roiZ=1,
                         roiHeight=20, roiWidth=20, roiDepth=3, volumeFilename=name))
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)


def _class_folders(root: Path, classes, rng) -> None:
    for parts in classes:
        folder = root.joinpath(*parts)
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((48, 48)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")


def _weights(folder: Path) -> None:
    """ImageNet ResNet-50 as a timm state dict; RadImageNet's as its PyTorch release saves it
    (nn.Sequential(*list(resnet50().children())[:9]) under ``backbone.``)."""
    import timm
    import torch
    import torchvision

    folder.mkdir(parents=True)
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), folder / "resnet50_imagenet.pth")
    release = torch.nn.Module()
    release.backbone = torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:9])
    torch.save(release.state_dict(), folder / "RadImageNet-ResNet50.pth")


def fabricate(root: Path) -> None:
    """Miniature versions of every file sweeps/paper.yaml names, in the real layouts, at root/data/..."""
    rng = np.random.default_rng(0)
    _lodopab(root / "data" / "lodopab", rng)
    _kneemri(root / "data" / "kneemri", rng)
    _class_folders(root / "data" / "imagenet" / "train", [("n01440764",), ("n01443537",)], rng)
    _class_folders(root / "data" / "radimagenet" / "radiology_ai",
                   [("CT", "lung", "nodule"), ("CT", "lung", "normal"), ("MR", "knee", "acl"), ("US", "ovary", "normal")], rng)
    _weights(root / "data" / "weights")


def paper_at(root: Path) -> dict:
    """sweeps/paper.yaml with its /data/ and /mnt/shared/ paths moved below ``root``."""
    text = PAPER.read_text().replace("/data/", f"{root}/data/").replace("/mnt/shared/", f"{root}/shared/")
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    fabricate(root)
    return root


def test_validate_passes_on_fabricated_real_layout_files(fabricated, tmp_path, capsys):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(paper_at(fabricated)))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "missing" not in capsys.readouterr().err


def test_every_start_of_the_paper_loads_with_its_preprocessing(fabricated):
    from spectral_ray.models import input_normalization
    from spectral_ray.weights import load_pretrained

    starts = {c["source_weights"] for c in paper_at(fabricated)["params"]["start"]["cases"]}
    seen = {}
    for spec in sorted(starts):
        model = load_pretrained("resnet50", in_chans=1, num_classes=2, source=spec)
        seen[spec.partition(":")[0]] = input_normalization(model)
    assert seen["file"]["mean"] == pytest.approx([np.mean([0.485, 0.456, 0.406])])  # timm's ImageNet stats
    assert seen["radimagenet"] == {"mean": [0.5], "std": [0.5]}  # the PyTorch release's (x - 127.5) * 2 / 255


@pytest.mark.slow
def test_one_trial_of_the_paper_sweep_on_fabricated_data(tmp_path):
    fabricate(tmp_path)
    sweep = paper_at(tmp_path)
    # one trial: the most demanding start (RadImageNet weights, edited RadImageNet pretraining)
    # on LoDoPaB-CT with its photon-noise shortcut, shrunk to CPU sizes
    sweep["params"]["start"]["cases"] = [sweep["params"]["start"]["cases"][3]]
    sweep["params"]["shortcut"]["cases"] = [sweep["params"]["shortcut"]["cases"][0]]
    sweep["params"].update({"degradation": 0.5, "fold": 0, "size": 32, "psd_images": 16,
                            "pretrain.epochs": 1, "finetune.epochs": 1, "finetune.early_stopping_patience": None})
    sweep["resources"] = {"cpu": 1, "gpu": 0}
    sweep["storage"] = str(tmp_path / "results")
    path = tmp_path / "paper-tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))

    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run([sys.executable, "-m", "spectral_ray.cli", "sweep", str(path)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trials: 1 TERMINATED" in proc.stdout
    trial = next((tmp_path / "results" / "paper").glob("*/result.json")).parent  # folder named by grid point
    final = json.loads((trial / "result.json").read_text().splitlines()[-1])
    assert final["psd_pretrained_on"] == "source" and len(final["psd_finetuned"]) == 17
    assert 0 <= final["ood_auc"] <= 1
    assert final["input_mean"] == [0.5] and final["input_std"] == [0.5]  # fine-tuned on RadImageNet's preprocessing
