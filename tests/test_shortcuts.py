"""clean_model_gaps: one d = 0 model per baseline, scored on the I.I.D. test set and each artifact's O.O.D. set."""

import numpy as np
import pytest
import torch

from spectral_ray.artifacts import get_artifact
from spectral_ray.data.registry import ImageDataset
from spectral_ray.protocol import make_splits
from spectral_ray.shortcuts import clean_model_gaps, train_small_cnn
from spectral_ray.training import evaluate


def tiny_target(n_patients=40, size=16, seed=0) -> ImageDataset:
    """Patients with 2–4 slices, patient-level labels; positives are brighter (a learnable cue)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), rng.integers(2, 5, n_patients)).astype(np.int64)
    labels = np.repeat(rng.integers(0, 2, n_patients), np.bincount(groups)).astype(np.int64)
    images = 0.3 + 0.2 * labels[:, None, None, None] + 0.3 * rng.random((len(groups), 1, size, size))
    return ImageDataset(images.astype(np.float32), labels, ["neg", "pos"], groups, name="tiny", params={})


def test_clean_model_gaps_keys_identity_and_determinism():
    ds = tiny_target()
    threads = torch.get_num_threads()
    out = clean_model_gaps(ds, {"identity": "none", "band": get_artifact("band", amplitude=0.5)}, fold=1, epochs=1)
    assert torch.get_num_threads() == threads
    assert set(out) == {"iid_auc", "val_auc", "ood_auc", "gap", "iid_auc_for", "val_auc_for", "n_train", "train_time_s"}
    assert set(out["ood_auc"]) == set(out["gap"]) == {"identity", "band"}
    assert all(0.0 <= a <= 1.0 for a in [out["iid_auc"], out["val_auc"], *out["ood_auc"].values()])
    assert out["ood_auc"]["identity"] == out["iid_auc"] and out["gap"]["identity"] == 0.0
    assert out["gap"]["band"] == out["ood_auc"]["band"] - out["iid_auc"]
    assert out["n_train"] == len(make_splits(ds, None, 0.0, 1, 0).train)

    by_family = clean_model_gaps(ds, ["none"], fold=1, epochs=1)
    assert by_family["iid_auc"] == out["iid_auc"] and by_family["gap"] == {"none": 0.0}
    with pytest.raises(TypeError, match="sequence of family names"):
        clean_model_gaps(ds, "band", fold=1, epochs=1)


def test_an_artifact_with_a_baseline_gets_its_own_d0_model():
    """Photon noise's d = 0 training split has every image at the baseline dose, so its gap is
    read against a model trained on that split, not on the clean one."""
    ds = tiny_target()
    noise = get_artifact("photon_noise", photons_per_pixel=2e4, baseline_photons_per_pixel=4e4)
    out = clean_model_gaps(ds, {"none": "none", "noise": noise}, fold=1, epochs=1)
    d0 = make_splits(ds, noise, 0.0, 1, 0)
    assert not np.array_equal(d0.train.images, make_splits(ds, None, 0.0, 1, 0).train.images)
    net, _ = train_small_cnn(d0, 0, epochs=1)
    assert out["iid_auc_for"]["noise"] == evaluate(net, d0.test_iid.images, d0.test_iid.labels)["auc"]
    assert out["ood_auc"]["noise"] == evaluate(net, d0.test_ood.images, d0.test_ood.labels)["auc"]
    assert out["gap"]["noise"] == out["ood_auc"]["noise"] - out["iid_auc_for"]["noise"]
    assert out["iid_auc_for"]["none"] == out["iid_auc"] and out["gap"]["none"] == 0.0
