"""What ``spectral-ray validate`` projects a sweep to cost: trials, distinct pretrainings and
wall-clock on this machine, from the per-trial figures measured in BENCHMARKS.md (kept here,
in :data:`MEASURED`, and nowhere else in the code).

The projection scales the measured fine-tune trial by epochs × image area × the model's
measured step cost (the training part of a trial; the rest is fixed per trial), a pretraining by
source images × epochs × area × model, and divides by the trials that run side by side (CPU
cores / ``resources.cpu``, capped by ``max_concurrent``). CPU figures only: with
``resources.gpu`` set it says so instead of guessing.
"""

from __future__ import annotations

import math
import os

# Measured on the project's 2-core machine (BENCHMARKS.md, "Projected wall-clock of the paper
# grids" and §7): one fine-tune trial under Ray, resnet10t at 64 px, 4 epochs on ct_lesion's
# ≈ 500 training images; one pretraining, resnet10t at 64 px on 3 000 source images × 3 epochs;
# resnet18's step cost relative to resnet10t at the presets' rates; Ray's start-up per sweep.
MEASURED = {
    "source": "BENCHMARKS.md §7 and 'Projected wall-clock of the paper grids'",
    "finetune_trial_s": 9.8, "finetune_train_fraction": 0.75, "finetune_epochs": 4, "size": 64,
    "pretrain_s": 45.0, "pretrain_images": 3000, "pretrain_epochs": 3,
    "model_cost": {"resnet10t": 1.0, "resnet18": 1.69},
    "ray_startup_s": 20.0,
}


def _trial_seconds(cfg, model_cost: float) -> float:
    m = MEASURED
    fixed = m["finetune_trial_s"] * (1 - m["finetune_train_fraction"])
    train = m["finetune_trial_s"] * m["finetune_train_fraction"]
    scale = cfg.finetune["epochs"] / m["finetune_epochs"] * (cfg.size / m["size"]) ** 2 * model_cost
    return fixed + train * scale


def _pretrain_seconds(cfg, model_cost: float) -> float:
    m = MEASURED
    return (m["pretrain_s"] * cfg.source_n / m["pretrain_images"] * cfg.pretrain["epochs"] / m["pretrain_epochs"]
            * (cfg.size / m["size"]) ** 2 * model_cost)


def estimate(sweep) -> dict:
    """{trials, pretrainings, parallel, seconds (None where not projected), note}: the sweep's
    grid (a sampled search: its ``num_samples`` trials at the first point's cost, and a
    pretraining per trial where a sampled key changes the backbone, as an edit strength does)."""
    from spectral_ray.config import TrialConfig, nest

    flats = sweep.trials()
    configs = [TrialConfig.model_validate(nest(f)) for f in flats]
    n_trials = sweep.num_trials()
    backbones = {_backbone_identity(c) for c in configs if c.source != "none" or c.source_weights}
    if _sampling_changes_backbone(sweep, flats[0]):  # every sample may pretrain its own backbone
        backbones = {f"sample {i}" for i in range(n_trials)}
    runs_per_trial = [len(c.degradations) * len(c.folds) if sweep.trainable == "robustness" else 1 for c in configs]
    cores = os.cpu_count() or 1
    parallel = max(1, int(cores // sweep.resources.cpu))
    if sweep.max_concurrent:
        parallel = min(parallel, sweep.max_concurrent)
    out = {"trials": n_trials, "pretrainings": len(backbones), "parallel": parallel, "cores": cores, "seconds": None}
    unknown = sorted({c.model for c in configs} - set(MEASURED["model_cost"]))
    if sweep.resources.gpu:
        out["note"] = "no projection for GPU trials (BENCHMARKS.md §5 has GPU figures)"
    elif unknown:
        out["note"] = f"no projection: no measured step cost for model(s) {', '.join(unknown)} in BENCHMARKS.md"
    elif sweep.trainable == "pretrain":
        out["note"] = "no projection for the pretrain trainable"
    else:
        cost = MEASURED["model_cost"]
        per_point = [_trial_seconds(c, cost[c.model]) * k for c, k in zip(configs, runs_per_trial)]
        trials_s = sum(per_point) * n_trials / len(configs)
        pre = [_pretrain_seconds(c, cost[c.model]) for c in {_backbone_identity(c): c for c in configs}.values()
               if c.source != "none"]
        pre_s = (sum(pre) / len(pre) * len(backbones)) if pre else 0.0
        out["seconds"] = MEASURED["ray_startup_s"] + (trials_s + pre_s) / parallel
        out["note"] = f"from {MEASURED['source']}, scaled by epochs, image size and model"
    return out


def _sampling_changes_backbone(sweep, flat: dict) -> bool:
    """Whether a sampled axis (choice/uniform/loguniform) changes what a trial pretrains."""
    from spectral_ray.config import TrialConfig, nest, normalize_trial

    base = _backbone_identity(TrialConfig.model_validate(nest(flat)))
    for key, (kind, value) in sweep.axes().items():
        if kind in ("choice", "uniform", "loguniform") and len(value) > 1:
            other = normalize_trial({**flat, key: value[-1]})
            if _backbone_identity(TrialConfig.model_validate(nest(other))) != base:
                return True
    return False


def _backbone_identity(cfg) -> str:
    return cfg.backbone().key()


def describe(est: dict) -> str:
    """One line: ``8 trials, 2 distinct pretrainings; projected ≈ 3 min on 2 cores (2 side by side) …``."""
    head = f"{est['trials']} trial(s), {est['pretrainings']} distinct pretraining(s)"
    if est["seconds"] is None:
        return f"{head}; {est['note']}"
    s = est["seconds"]
    when = f"{s / 3600:.1f} h" if s >= 5400 else f"{math.ceil(s / 60)} min"
    return (f"{head}; projected wall-clock ≈ {when} on this machine's {est['cores']} core(s), "
            f"{est['parallel']} trial(s) side by side ({est['note']})")
