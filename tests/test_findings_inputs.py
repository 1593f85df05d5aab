"""What the findings read from a trial: the shared-probe priority, the source label and the
artifact's resolved parameters (spectral_ray.experiment), and the fallbacks for older experiments
(analysis.aggregate.with_identity)."""

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import RESOLVED, SOURCE, group_keys, with_identity
from spectral_ray.artifacts import get_artifact
from spectral_ray.config import TrialConfig
from spectral_ray.experiment import probe_priority, run_finetune, source_label
from spectral_ray.robustness import objective, robustness

TINY = dict(source="none", size=32, target_n=160, psd_images=24, finetune={"epochs": 1})


def test_probe_priority_is_one_vector_per_backbone_and_target(tmp_path):
    """Another fold and shortcut of one backbone report the same ``psd_probe``."""
    base = TrialConfig(**TINY, store=str(tmp_path), degradation=0.5, artifact_omega=0.25)
    runs = [run_finetune(base), run_finetune(base.model_copy(update={"fold": 1, "artifact_omega": 0.75}))]
    probes = [np.asarray(r["psd_probe"]) for r in runs]
    assert probes[0].shape == (17,) and probes[0].sum() == pytest.approx(1.0, rel=1e-4)
    assert np.array_equal(probes[0], probes[1])
    assert np.isfinite(runs[0]["centroid_probe"]) and np.isfinite(runs[0]["band_alignment_probe"])
    assert runs[0]["source_label"] == "none"
    assert runs[0]["artifact_resolved"] == get_artifact("band", omega=0.25).params  # defaults filled in
    assert runs[0]["artifact_resolved"]["bandwidth"] == 0.05


def test_probe_head_does_not_depend_on_the_trials_seed():
    import torch

    from spectral_ray.models import create_model, replace_head

    images = np.random.default_rng(0).random((8, 1, 32, 32), dtype=np.float32)
    labels = np.array([0, 1] * 4)
    torch.manual_seed(0)
    net = create_model("resnet10t", in_chans=1, num_classes=2)
    vectors = []
    for seed in (1, 2):  # the trial's head is drawn with its own seed
        torch.manual_seed(seed)
        replace_head(net, 2)
        state = torch.random.get_rng_state()
        vectors.append(np.asarray(probe_priority(net, images, labels)))
        assert torch.equal(torch.random.get_rng_state(), state)  # the trial's RNG stream is untouched
    assert np.array_equal(vectors[0], vectors[1])


def test_source_label_from_weights():
    assert source_label("natural", None) == "natural"
    assert source_label("none", None) == "none"
    assert source_label("none", "timm") == "imagenet"
    assert source_label("none", "radimagenet:/w/RadImageNet-ResNet50.pth") == "radimagenet"
    assert source_label("none", "file:/data/weights/resnet50_imagenet.pth") == "resnet50_imagenet"
    assert source_label("imagenet_folder", "file:/w/resnet50_imagenet.pth") == "resnet50_imagenet+imagenet_folder"


def test_paper_sweeps_weight_arms_are_separate_sources_with_unedited_controls():
    from pathlib import Path

    import yaml

    from spectral_ray.config import SweepFile

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml").read_text())
    trials = SweepFile.model_validate(raw).trials()
    arms = {(source_label(t["source"], t["source_weights"]), t["edit_strength"]) for t in trials}
    assert {("resnet50_imagenet", 0.0), ("radimagenet", 0.0)} <= arms  # two sources in F1/F2
    for src in ("resnet50_imagenet+imagenet_folder", "radimagenet+radimagenet_folder"):
        assert {(src, 0.0), (src, 1.0)} <= arms  # F5: edited vs unedited at equal pretraining


def test_older_experiments_read_their_own_params_never_todays_defaults():
    old = pd.DataFrame({"kind": "finetune", "source": ["natural", "none"], "source_weights": [None, "timm"],
                        "artifact": "band", "artifact_omega": [0.25, None], "artifact_amplitude": [0.1, None],
                        "artifact_params/bandwidth": [0.1, None]})
    t = with_identity(old)
    assert t[SOURCE].tolist() == ["natural", "imagenet"]
    assert t[f"{RESOLVED}omega"].iloc[0] == 0.25 and t[f"{RESOLVED}bandwidth"].iloc[0] == 0.1
    assert pd.isna(t[f"{RESOLVED}omega"].iloc[1])  # unset in params.json: not refilled from the family
    new = old.assign(**{SOURCE: ["natural", "x"], f"{RESOLVED}omega": [0.5, 0.5]})
    assert with_identity(new)[f"{RESOLVED}omega"].tolist() == [0.5, 0.5]  # reported values win
    keys = group_keys(t)
    assert keys[:2] == [SOURCE, "artifact"] or SOURCE in keys
    assert f"{RESOLVED}omega" in keys and "artifact_omega" not in keys and "source" not in keys


def test_one_robustness_rule():
    # levels weigh equally whatever their number of folds; a missing level makes it incomparable
    assert robustness([0.8, 0.6, 0.4], [0, 0, 1]) == pytest.approx((0.7 + 0.4) / 2)
    assert np.isnan(robustness([0.8, 0.6], [0, 0], levels=[0, 1]))
    assert objective(0.6, 0.65, iid_floor=0.7) == pytest.approx(0.55) and objective(0.6, 0.9, 0.7) == 0.6
