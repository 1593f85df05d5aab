"""The d = 0 shortcut check (docs/SHORTCUTS.md): does an artifact that a model never saw in training
read as a class? A small CNN is trained on a target's clean training split and scored on the clean
test set (I.I.D.) and on each artifact's O.O.D. test set (the artifact on every negative test
image). ``bench/calibrate_shortcuts.py`` records these numbers; the slow test
``test_artifacts_do_not_mimic_the_label`` checks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from spectral_ray.artifacts import Artifact
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
    """Train one clean model (:func:`train_small_cnn` on ``make_splits(dataset, None, 0, fold,
    seed).train``) and score it on the clean val and I.I.D. test sets and on every artifact's
    O.O.D. test set (``make_splits(dataset, artifact, 0, fold, seed).test_ood``).

    Args:
        dataset: binary target (labels 0/1) with patient ``groups``; images (n, C, H, W) float32
            in [0, 1].
        artifacts: name -> :class:`Artifact` or family name (default parameters); a sequence of
            family names is keyed by the names.
        fold, seed: as in :func:`~spectral_ray.protocol.make_splits`; ``seed`` also seeds the model.
        model, epochs, lr, num_threads, device: the recipe (see :func:`train_small_cnn`); scoring
            runs with ``num_threads`` torch threads too.

    Returns:
        ``{"iid_auc", "val_auc": float, "ood_auc": {name: float}, "gap": {name: ood_auc − iid_auc},
        "n_train": int, "train_time_s": float}``; AUCs are ROC AUC in [0, 1] (NaN when undefined).
        An identity artifact (family ``none``) has ``ood_auc == iid_auc`` and gap 0.
    """
    if isinstance(artifacts, str):
        raise TypeError("artifacts must be a mapping or a sequence of family names, not one string")
    named = dict(artifacts) if isinstance(artifacts, Mapping) else {name: name for name in artifacts}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        clean = make_splits(dataset, None, 0.0, fold, seed)
        net, history = train_small_cnn(clean, seed, model=model, epochs=epochs, lr=lr, num_threads=num_threads, device=device)
        iid = evaluate(net, clean.test_iid.images, clean.test_iid.labels)["auc"]
        val = evaluate(net, clean.val.images, clean.val.labels)["auc"]
        ood = {}
        for name, artifact in named.items():
            test_ood = make_splits(dataset, artifact, 0.0, fold, seed).test_ood
            ood[name] = evaluate(net, test_ood.images, test_ood.labels)["auc"]
    finally:
        torch.set_num_threads(old_threads)
    return {
        "iid_auc": iid,
        "val_auc": val,
        "ood_auc": ood,
        "gap": {name: auc - iid for name, auc in ood.items()},
        "n_train": len(clean.train),
        "train_time_s": history["train_time_s"],
    }
