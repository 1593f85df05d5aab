"""sweeps/paper.yaml: validation names every missing path; with miniature files fabricated in
the real formats at those paths, a one-trial run of the paper sweep (tiny sizes) completes."""

import json
import os
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


def fabricate(root: Path) -> None:
    """Miniature LoDoPaB-CT, RadImageNet folders and ResNet-50 weight files at root/data/..."""
    import timm
    import torch

    rng = np.random.default_rng(0)
    lodopab = root / "data" / "lodopab"
    lodopab.mkdir(parents=True)
    n_patients, per_patient = 16, 2
    rows, slices = [], []
    for p in range(n_patients):
        label = p % 2
        for s in range(per_patient):
            x = rng.random((362, 362)).astype(np.float32) * 0.2 + 0.4
            if label:
                x[150:210, 150:210] += 0.3
            slices.append(x)
            rows.append({"file": "ground_truth_train_000.hdf5", "index": len(slices) - 1, "label": label,
                         "patient": f"P{p}"})
    with h5py.File(lodopab / "ground_truth_train_000.hdf5", "w") as f:
        f.create_dataset("data", data=np.stack(slices))
    pd.DataFrame(rows).to_csv(lodopab / "labels.csv", index=False)

    rad = root / "data" / "radimagenet" / "radiology_ai"
    for parts in (("CT", "lung", "nodule"), ("CT", "lung", "normal"), ("MR", "knee", "acl"), ("US", "ovary", "normal")):
        folder = rad.joinpath(*parts)
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((48, 48)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")

    weights = root / "data" / "weights"
    weights.mkdir(parents=True)
    state = timm.create_model("resnet50", pretrained=False).state_dict()
    torch.save(state, weights / "resnet50_imagenet.pth")
    torch.save(state, weights / "RadImageNet-ResNet50.pth")


@pytest.mark.slow
def test_one_trial_of_the_paper_sweep_on_fabricated_data(tmp_path):
    fabricate(tmp_path)
    text = PAPER.read_text().replace("/data/", f"{tmp_path}/data/").replace("/mnt/shared/", f"{tmp_path}/shared/")
    sweep = yaml.safe_load(text)
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
    trial = next((tmp_path / "results" / "paper").glob("finetune_*"))
    final = json.loads((trial / "result.json").read_text().splitlines()[-1])
    assert final["psd_pretrained_on"] == "source" and len(final["psd_finetuned"]) == 17
    assert 0 <= final["ood_auc"] <= 1
