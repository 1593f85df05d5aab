"""The d = 0 shortcut check (docs/SHORTCUTS.md): does an artifact that a model never saw in training
read as a class? A small CNN is trained on a target's d = 0 training split and scored on the
I.I.D. test set and on each artifact's O.O.D. test set (the artifact on every negative test
image). At d = 0 the training split carries only the artifact's baseline (photon noise: every
image at the baseline dose; most artifacts have none), so one model is trained per distinct
baseline. ``bench/calibrate_shortcuts.py`` records these numbers; the slow test
``test_artifacts_do_not_mimic_the_label`` checks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from spectral_ray.artifacts import Artifact, get_artifact
from spectral_ray.data.registry import ImageDataset
from spectral_ray.models import create_model
from spectral_ray.protocol import Splits, make_splits
from spectral_ray.training import Recipe, evaluate, fit

__all__ = ["train_small_cnn", "clean_model_gaps"]


def train_small_cnn(
    splits: Splits, seed: int = 0, *, model: str = "resnet10t", epochs: int = 6, lr: float = 1e-3,
    num_threads: int = 1, device: str = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """Train a randomly initialised timm ``model`` (input channels from the images, 2 classes,
    initialised under ``torch.manual_seed(seed)``) on ``splits.train`` with the calibration recipe:
    AdamW ``lr``, weight decay 0.05, batch 32, ``epochs`` epochs, no augmentation, ``num_threads``
    torch threads. Returns (model in eval mode, :func:`~spectral_ray.training.fit` history)."""
    torch.manual_seed(seed)
    net = create_model(model, in_chans=splits.train.images.shape[1], num_classes=2)
    recipe = Recipe(lr=lr, epochs=epochs, batch_size=32, augment=False, num_threads=num_threads, weight_decay=0.05)
    history = fit(net, splits.train, None, recipe, seed=seed, device=device)
    return net, history


def clean_model_gaps(
    dataset: ImageDataset,
    artifacts: Mapping[str, Artifact | str] | Sequence[str],
    fold: int,
    seed: int = 0,
    *,
    model: str = "resnet10t",
    epochs: int = 6,
    lr: float = 1e-3,
    num_threads: int = 1,
    device: str = "cpu",
) -> dict:
    """For each distinct baseline among ``artifacts`` train one model (:func:`train_small_cnn` on
    ``make_splits(dataset, artifact, 0, fold, seed).train``, which carries that baseline and no
    artifact) and score it on its val and I.I.D. test sets and on each of those artifacts' O.O.D.
    test sets (``make_splits(dataset, artifact, 0, fold, seed).test_ood``).

    Args:
        dataset: binary target (labels 0/1) with patient ``groups``; images (n, C, H, W) float32
            in [0, 1].
        artifacts: name -> :class:`Artifact` or family name (default parameters); a sequence of
            family names is keyed by the names.
        fold, seed: as in :func:`~spectral_ray.protocol.make_splits`; ``seed`` also seeds the model.
        model, epochs, lr, num_threads, device: the recipe (see :func:`train_small_cnn`); scoring
            runs with ``num_threads`` torch threads too.

    Returns:
        ``{"iid_auc", "val_auc": float, "ood_auc": {name: float}, "gap": {name: ood_auc − iid},
        "iid_auc_for", "val_auc_for": {name: float}, "n_train": int, "train_time_s": float}``:
        ``gap``, ``iid_auc_for`` and ``val_auc_for`` are those of the model trained with the
        artifact's own baseline; ``iid_auc``/``val_auc``/``n_train`` are those of the model without a baseline (the first
        model when every artifact has one); ``train_time_s`` sums all models. AUCs are ROC AUC in
        [0, 1] (NaN when undefined). An identity artifact (``none``) has gap 0.
    """
    if isinstance(artifacts, str):
        raise TypeError("artifacts must be a mapping or a sequence of family names, not one string")
    named = dict(artifacts) if isinstance(artifacts, Mapping) else {name: name for name in artifacts}
    named = {name: get_artifact(a) if isinstance(a, str) else a for name, a in named.items()}
    by_baseline: dict = {} if named else {None: []}  # no artifacts: still the clean model's AUCs
    for name, artifact in named.items():
        by_baseline.setdefault(artifact.baseline, []).append(name)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        scored = {
            baseline: _score_d0_model(dataset, {n: named[n] for n in names}, fold, seed, model=model, epochs=epochs,
                                      lr=lr, num_threads=num_threads, device=device)
            for baseline, names in by_baseline.items()
        }
    finally:
        torch.set_num_threads(old_threads)
    main = scored[None] if None in scored else next(iter(scored.values()))
    iid_for = {name: s["iid_auc"] for s in scored.values() for name in s["ood_auc"]}
    val_for = {name: s["val_auc"] for s in scored.values() for name in s["ood_auc"]}
    ood = {name: a for s in scored.values() for name, a in s["ood_auc"].items()}
    return {
        "iid_auc": main["iid_auc"],
        "val_auc": main["val_auc"],
        "ood_auc": {name: ood[name] for name in named},
        "gap": {name: ood[name] - iid_for[name] for name in named},
        "iid_auc_for": {name: iid_for[name] for name in named},
        "val_auc_for": {name: val_for[name] for name in named},
        "n_train": main["n_train"],
        "train_time_s": sum(s["train_time_s"] for s in scored.values()),
    }


def _score_d0_model(dataset: ImageDataset, artifacts: dict[str, Artifact], fold: int, seed: int, **recipe) -> dict:
    """One model trained on the d = 0 split of ``artifacts`` (which share one baseline; clean
    when empty), scored on its val, I.I.D. and each artifact's O.O.D. test set."""
    first = next(iter(artifacts.values()), None)
    d0 = make_splits(dataset, first, 0.0, fold, seed)
    net, history = train_small_cnn(d0, seed, **recipe)
    ood = {}
    for name, artifact in artifacts.items():
        test_ood = make_splits(dataset, artifact, 0.0, fold, seed).test_ood
        ood[name] = evaluate(net, test_ood.images, test_ood.labels)["auc"]
    return {
        "iid_auc": evaluate(net, d0.test_iid.images, d0.test_iid.labels)["auc"],
        "val_auc": evaluate(net, d0.val.images, d0.val.labels)["auc"],
        "ood_auc": ood,
        "n_train": len(d0.train),
        "train_time_s": history["train_time_s"],
    }
