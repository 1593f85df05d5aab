"""What one trial does, without Ray: pretrain once via the store, fine-tune, measure, report."""

from pathlib import Path

import numpy as np
import pytest

from spectral_ray.config import TrialConfig
from spectral_ray.experiment import artifact_band_mass, run_finetune, run_pretrain, run_robustness

TINY = dict(source_n=200, size=32, target_n=160, psd_images=32, pretrain={"epochs": 1}, finetune={"epochs": 1})


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "store")


def test_finetune_reports_the_contract(store, tmp_path):
    cfg = TrialConfig(**TINY, store=store, degradation=0.5, artifact_omega=0.5)
    reports = []
    final = run_finetune(cfg, reports.append, tensorboard_dir=tmp_path / "tb", checkpoint_path=tmp_path / "m.pt")
    epochs = [r for r in reports if "epoch" in r]
    assert len(epochs) == 1
    for key in ("train_loss", "val_loss", "val_auc"):
        assert np.isfinite(epochs[0][key])
    # the presets evaluate the test sets once, on the weights the trial reports
    assert "iid_auc" not in epochs[0] and "ood_auc" not in epochs[0]
    assert reports[-1] is final and final["done"]
    assert np.isfinite(final["iid_auc"]) and np.isfinite(final["ood_auc"])
    for name in ("pretrained", "before", "finetuned", "artifact"):
        p = np.asarray(final[f"psd_{name}"])
        assert p.shape == (17,) and p.sum() == pytest.approx(1.0, rel=1e-4)
    for key in ("centroid_finetuned", "centroid_pretrained_nodc", "alignment_finetuned", "cosine_pretrained",
                "band_alignment_finetuned", "iid_ood_gap"):
        assert np.isfinite(final[key]), key
    assert final["n_artifact_train"] > 0
    # the artifact-weighted alignment and how its weight was measured (docs/SCIENCE.md, "Alignment")
    w = np.asarray(final["artifact_weight"])
    assert w.shape == (17,) and w[0] == 0.0 and ((0 <= w) & (w <= 1)).all() and np.ptp(w) > 0
    for name in ("artifact_probe", "image_probe"):
        assert np.asarray(final[f"psd_{name}"]).sum() == pytest.approx(1.0)
    assert final["artifact_weight_images"] == 32
    for name in ("pretrained", "probe", "finetuned"):
        assert 0 <= final[f"shortcut_alignment_{name}"] <= 1
    for name in ("probe", "finetuned"):
        assert final[f"artifact_sensitivity_{name}"] > 0 and 0 < final[f"artifact_sensitivity_rel_{name}"] <= 1
    assert final["finetune_seed_used"] == cfg.effective_finetune_seed != cfg.seed
    assert final["artifact_seed_used"] == cfg.effective_artifact_seed and final["random_init_seed"] is None
    assert (tmp_path / "m.pt").exists()
    assert any((tmp_path / "tb").iterdir())


def test_pretrain_once_then_reuse(store):
    cfg = TrialConfig(**TINY, store=store)
    first = run_pretrain(cfg)
    second = run_pretrain(cfg)
    assert first["trained_here"] and not second["trained_here"]
    assert first["pretrain_key"] == second["pretrain_key"]
    assert first["psd_pretrained"] == second["psd_pretrained"]
    # strength 0 of any edit is the unedited source: same backbone
    same = run_pretrain(cfg.model_copy(update={"edit": "band_gain", "edit_strength": 0.0}))
    assert same["pretrain_key"] == first["pretrain_key"] and not same["trained_here"]


def test_robustness_is_mean_ood_auc(store):
    cfg = TrialConfig(**TINY, store=store, source="none", degradations=[0.0, 1.0], iid_floor=0.99)
    reports = []
    out = run_robustness(cfg, reports.append)
    assert [r["levels_done"] for r in reports] == [1, 2]
    per_level = [reports[0]["ood_auc_d0"], reports[1]["ood_auc_d1"]]
    assert out["robustness"] == pytest.approx(np.mean(per_level))
    assert out["objective"] == pytest.approx(out["robustness"] - max(0, 0.99 - out["iid_mean"]))


def test_band_mass_of_the_artifact():
    sig = np.zeros(17)
    sig[8] = 0.95
    sig[7] = sig[9] = 0.025
    p = np.full(17, 1 / 17)
    assert artifact_band_mass(p, sig) == pytest.approx(1 / 17)  # only bin 8 reaches 10 % of the peak


def test_start_from_published_weights_file(store, tmp_path):
    import timm
    import torch

    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "w.pth")
    cfg = TrialConfig(**TINY, store=store, source="none", source_weights=f"file:{tmp_path / 'w.pth'}")
    final = run_finetune(cfg)
    assert final["psd_pretrained_on"] == "target"  # no source data: measured on the clean target
    assert final["psd_pretrained"] == final["psd_before"]
    assert final["pretrain_key"]  # kept in the store like any backbone


def test_lab_preset_resolves_to_the_lab_recipe():
    from spectral_ray.experiment import finetune_recipe

    r = finetune_recipe(TrialConfig(finetune_preset="lab"))
    assert (r.optimizer, r.lr, r.adam_eps, r.weight_decay, r.backbone_lr_mult) == ("adam", 1e-3, 1e-7, 0.0, 1.0)
    assert r.head_dropout == 0.5 and not r.augment
    assert r.affine == {"rotation_deg": 10, "shift": 0.1, "shear_deg": 0.1, "zoom": 0.1}
    assert (r.epochs, r.batch_size, r.early_stopping_patience) == (30, 256, 30)  # best val-loss epoch restored
    assert (r.scheduler, r.label_smoothing, r.freeze_stages, r.linear_probe_epochs) == ("none", 0.0, 0, 0)
    # explicit finetune.* keys win over the preset; the default preset is the embedded recipe
    assert finetune_recipe(TrialConfig(finetune_preset="lab", finetune={"epochs": 2})).epochs == 2
    default = finetune_recipe(TrialConfig())
    assert (default.optimizer, default.backbone_lr_mult, default.head_dropout, default.affine_rotation_deg) == ("adamw", 0.3, 0.0, 0.0)


def test_preset_is_chosen_in_a_sweep_file_and_unknown_names_are_rejected():
    from spectral_ray.config import SweepError, nest, parse_sweep
    from trainables.launcher import resolved

    sweep = parse_sweep({"name": "p", "params": {"arm": {"cases": [{"finetune_preset": "lab"}, {"finetune.lr": 0.01}]}}},
                        check_storage=False)
    lab, default = sweep.trials()
    assert lab["finetune.lr"] == 1e-3 and default["finetune.lr"] == 0.01  # filled from each trial's own preset
    assert resolved(nest(lab))["finetune"]["head_dropout"] == 0.5  # what params.json records
    with pytest.raises(SweepError, match=r"params.finetune_preset.*unknown finetune_preset 'keras'.*'default', 'lab'"):
        parse_sweep({"name": "p", "params": {"finetune_preset": "keras"}}, check_storage=False)
    with pytest.raises(SweepError, match="finetune_preset: NAME"):
        parse_sweep({"name": "p", "params": {"finetune.preset": "lab"}}, check_storage=False)
    with pytest.raises(SweepError, match="grid"):
        parse_sweep({"name": "p", "search": {"algorithm": "random", "num_samples": 2},
                     "params": {"finetune_preset": {"choice": ["lab", "default"]}}}, check_storage=False)


def test_tiny_finetune_with_the_lab_preset(store):
    cfg = TrialConfig(**{**TINY, "finetune": {"epochs": 2, "eval_sets_every": 1}}, store=store, source="none",
                      degradation=0.5, finetune_preset="lab")
    reports = []
    final = run_finetune(cfg, reports.append)
    epochs = [r for r in reports if "epoch" in r]
    assert len(epochs) == 2 and final["done"] and not final["stopped_early"]  # patience 30 > 2 epochs
    best = min(epochs, key=lambda e: e["val_loss"])
    assert final["best_epoch"] == best["epoch"]
    assert (final["iid_auc"], final["ood_auc"]) == (best["iid_auc"], best["ood_auc"])  # the restored epoch


def test_probe_priority_is_computed_once_per_backbone_and_probe_set(store, monkeypatch):
    import spectral_ray.experiment as experiment

    calls = []
    real = experiment.probe_priority
    monkeypatch.setattr(experiment, "probe_priority", lambda *a: calls.append(1) or real(*a))
    cfg = TrialConfig(**TINY, store=store, degradation=0.5)
    first = run_finetune(cfg)
    other_fold = run_finetune(cfg.model_copy(update={"fold": 1, "degradation": 1.0}))
    assert len(calls) == 1 and first["psd_probe"] == other_fold["psd_probe"]
    memo = list(Path(store).rglob("probe_priority/*.npy"))
    assert len(memo) == 1
    # another probe set (more images) is another entry, computed
    run_finetune(cfg.model_copy(update={"psd_images": 16}))
    assert len(calls) == 2 and len(list(Path(store).rglob("probe_priority/*.npy"))) == 2


def test_d0_twins_stay_one_network_and_record_their_seeds(store):
    """Seeds derive from the backbone, not the shortcut: at d = 0 two shortcut cases train the same
    network; a random-init backbone is drawn with the fine-tuning seed and says so."""
    cfg = TrialConfig(**TINY, store=store, source="none", degradation=0.0, artifact_omega=0.25)
    low, high = run_finetune(cfg), run_finetune(cfg.model_copy(update={"artifact_omega": 0.75, "artifact_amplitude": 0.3}))
    assert low["psd_finetuned"] == high["psd_finetuned"] and low["val_auc"] == high["val_auc"]
    assert low["random_init_seed"] == low["finetune_seed_used"] == cfg.effective_finetune_seed
    # the same backbone, each measured against its own artifact
    assert low["artifact_weight"] != high["artifact_weight"]
    assert low["shortcut_alignment_probe"] != high["shortcut_alignment_probe"]
    explicit = run_finetune(cfg.model_copy(update={"finetune_seed": 3, "artifact_seed": 4}))
    assert (explicit["finetune_seed_used"], explicit["artifact_seed_used"], explicit["random_init_seed"]) == (3, 4, 3)


def test_the_artifact_probe_is_the_trials_artifact_on_its_probe_images_at_its_dose():
    from spectral_ray.experiment import ARTIFACT_PROBE_STREAM, PROBE_SEED, artifact_probe, probe_index, trial_splits

    cfg = TrialConfig(**TINY, target="ct_lesion", artifact="photon_noise", degradation=0.5)
    artifact, splits = trial_splits(cfg)
    probe = artifact_probe(splits, 16)
    sel = probe_index(len(splits.test_iid), 16)
    # x: the clean test images as trained on (the baseline dose); A(x): the artifact dose instead
    np.testing.assert_array_equal(probe.clean, splits.test_iid.images[sel])
    originals = splits.dataset.images[splits.index["test"][sel]]
    assert not np.array_equal(probe.clean, originals)
    rng = np.random.default_rng(np.random.SeedSequence([PROBE_SEED, ARTIFACT_PROBE_STREAM]))
    np.testing.assert_array_equal(probe.artifacted, artifact(originals, rng))
    # every trial of this target and artifact measures the same w: other fold, d, backbone and seeds
    for update in ({"fold": 1}, {"degradation": 1.0}, {"source": "medical"}, {"artifact_seed": 5}):
        other = artifact_probe(trial_splits(cfg.model_copy(update=update))[1], 16)
        np.testing.assert_array_equal(other.weight, probe.weight)
    # another dose is another weight
    lower = artifact_probe(trial_splits(cfg.model_copy(update={"artifact_params": {"photons_per_pixel": 1e5}}))[1], 16)
    assert lower.weight[1:].mean() > probe.weight[1:].mean()
