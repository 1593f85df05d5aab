"""clean_model_gaps: one clean model, scored on the I.I.D. test set and each artifact's O.O.D. set."""

import numpy as np
import pytest
import torch

from spectral_ray.artifacts import get_artifact
from spectral_ray.data.registry import ImageDataset
from spectral_ray.protocol import make_splits
from spectral_ray.shortcuts import clean_model_gaps


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
    assert set(out) == {"iid_auc", "val_auc", "ood_auc", "gap", "n_train", "train_time_s"}
    assert set(out["ood_auc"]) == set(out["gap"]) == {"identity", "band"}
    assert all(0.0 <= a <= 1.0 for a in [out["iid_auc"], out["val_auc"], *out["ood_auc"].values()])
    assert out["ood_auc"]["identity"] == out["iid_auc"] and out["gap"]["identity"] == 0.0
    assert out["gap"]["band"] == out["ood_auc"]["band"] - out["iid_auc"]
    assert out["n_train"] == len(make_splits(ds, None, 0.0, 1, 0).train)

    by_family = clean_model_gaps(ds, ["none"], fold=1, epochs=1)
    assert by_family["iid_auc"] == out["iid_auc"] and by_family["gap"] == {"none": 0.0}
    with pytest.raises(TypeError, match="sequence of family names"):
        clean_model_gaps(ds, "band", fold=1, epochs=1)
