"""The degradation protocol (docs/SCIENCE.md, docs/SHORTCUTS.md): plant an artifact into a fraction d
of the positive-class training and validation images, test on a clean set (I.I.D.) and on a set
with the correlation flipped (O.O.D.: the artifact on every negative test image).

Splits, all grouped by patient (``dataset.groups``; a dataset without groups is treated as one
image per patient):

* **test** — a fraction ``test_fraction`` of the patients, chosen by ``GroupShuffleSplit`` with
  ``test_seed`` (default 0). It depends on neither ``fold`` nor ``seed``: every fold and every
  seed of a sweep is scored on the same patients.
* **train / val** — the other patients, split by ``GroupShuffleSplit(n_splits=n_folds,
  test_size=val_fraction, random_state=1000 + test_seed)``; fold f takes the f-th split. So
  ``val_fraction`` is a fraction of the non-test *patients* (≈ of the images when patients have
  similar slice counts).
* **artifact** — exactly ``round(d × n_pos)`` positive (label 1) images of train, and of val, each
  drawn without replacement by a generator seeded with (seed, fold); Python's ``round``
  (half to even). ``test_iid`` is clean; ``test_ood`` has the artifact on every negative
  (label 0) test image, its noise drawn from a generator seeded with ``test_seed`` only, so
  test_ood is identical across folds and seeds: every trial of one target and artifact is scored
  on the same O.O.D. images (the trial's seed, since issue 20 derived from its backbone, would
  otherwise make the O.O.D. draws differ between the backbones being compared).
* **baseline** — an artifact may carry a baseline transform (``artifact.baseline``; photon noise:
  the baseline dose) that every image of train, val, test_iid and test_ood gets; the artifact
  images get the artifact instead. Its draws depend on neither d nor the mask, and test_iid and
  test_ood share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from spectral_ray.artifacts import Artifact, get_artifact
from spectral_ray.data.registry import ImageDataset

__all__ = ["Splits", "make_splits", "fixed_test_split", "artifact_count"]

# Stream ids keep the generators of the different random choices independent.
_PICK_TRAIN, _PICK_VAL, _NOISE_TRAIN, _NOISE_VAL, _NOISE_TEST, _BASELINE = range(6)


@dataclass
class Splits:
    """The four evaluation sets of one (dataset, artifact, d, fold, seed).

    ``index[name]`` are row indices into the original dataset (test_iid and test_ood share
    ``index["test"]``); ``artifact_mask[name]`` marks, per row of that split, the images that
    carry the artifact; ``artifact_index[name]`` the same as dataset indices; ``dataset`` the
    original dataset (not a copy), so the clean images behind any split can be read back.
    """

    train: ImageDataset
    val: ImageDataset
    test_iid: ImageDataset
    test_ood: ImageDataset
    index: dict[str, np.ndarray]
    artifact_mask: dict[str, np.ndarray]
    degradation: float
    fold: int
    seed: int
    artifact: Artifact
    info: dict = field(default_factory=dict)
    dataset: ImageDataset | None = None  # the dataset ``index`` points into (the images before any artifact or baseline)

    @property
    def artifact_index(self) -> dict[str, np.ndarray]:
        return {
            name: self.index["test" if name.startswith("test") else name][mask]
            for name, mask in self.artifact_mask.items()
        }

    def summary(self) -> dict:
        """Counts per split: images, positives, artifact images (positive / negative)."""
        out = {}
        for name in ("train", "val", "test_iid", "test_ood"):
            ds, mask = getattr(self, name), self.artifact_mask[name]
            out[name] = {
                "n": len(ds),
                "n_pos": int((ds.labels == 1).sum()),
                "artifact_pos": int((mask & (ds.labels == 1)).sum()),
                "artifact_neg": int((mask & (ds.labels == 0)).sum()),
                "patients": int(len(np.unique(ds.groups))) if ds.groups is not None else len(ds),
            }
        return out


def artifact_count(degradation: float, n_pos: int) -> int:
    """Number of positive images that get the artifact: round(d × n_pos)."""
    return int(round(degradation * n_pos))


def _groups(dataset: ImageDataset) -> np.ndarray:
    if dataset.groups is None:
        return np.arange(len(dataset))
    g = np.asarray(dataset.groups)
    if g.shape != (len(dataset),):
        raise ValueError(f"groups must have shape ({len(dataset)},), got {g.shape}")
    return g


def fixed_test_split(dataset: ImageDataset, test_fraction: float = 0.2, test_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) dataset indices: the fixed, patient-grouped test set and everything else."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    idx = np.arange(len(dataset))
    gss = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=test_seed)
    pool, test = next(gss.split(idx, groups=_groups(dataset)))
    return np.sort(pool), np.sort(test)


def _with_artifact(ds: ImageDataset, mask: np.ndarray, artifact: Artifact, rng: np.random.Generator,
                   baseline_rng: np.random.Generator) -> ImageDataset:
    """Every image gets the artifact's baseline (photon noise: the baseline dose; most artifacts
    have none), drawn from ``baseline_rng`` whatever the mask; the ``mask`` images get the
    artifact instead, applied to the original image (as the lab's include_noise.py does)."""
    original = ds.images
    baseline = artifact.baseline
    if baseline is not None:
        ds.images = baseline(original, baseline_rng)
    if mask.any() and artifact.family != "none":
        ds.images[mask] = artifact(original[mask], rng)
    return ds


def _subset(dataset: ImageDataset, index: np.ndarray) -> ImageDataset:
    ds = dataset.subset(index)  # fancy indexing: a copy, safe to modify
    ds.images = np.ascontiguousarray(ds.images)
    return ds


def make_splits(
    dataset: ImageDataset,
    artifact: Artifact | str | None,
    degradation: float,
    fold: int,
    seed: int,
    *,
    n_folds: int = 5,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    test_seed: int = 0,
) -> Splits:
    """Train / val / test_iid / test_ood for one cell of the degradation grid.

    Args:
        dataset: a binary target (labels 0/1) with patient ``groups``.
        artifact: an :class:`Artifact`, a family name (default parameters) or None (clean).
        degradation: d ∈ [0, 1], the fraction of positive train/val images given the artifact.
        fold: 0 … n_folds − 1, which patient-grouped train/val split.
        seed: seeds which positives of train and val get the artifact and the artifact's own
            noise there (the test sets' artifact noise and baseline are drawn from ``test_seed``
            alone). A trial passes ``TrialConfig.effective_artifact_seed``.

    Deterministic in (dataset, artifact params, degradation, fold, seed, fractions, test_seed).
    """
    _check_arguments(dataset, degradation, fold, n_folds, val_fraction, seed)
    artifact = _as_artifact(artifact)
    degradation, fold, seed = float(degradation), int(fold), int(seed)
    index = _patient_split(dataset, fold, n_folds, val_fraction, test_fraction, test_seed)
    parts, masks = {}, {}
    for name, pick, noise in (("train", _PICK_TRAIN, _NOISE_TRAIN), ("val", _PICK_VAL, _NOISE_VAL)):
        ds = _subset(dataset, index[name])
        masks[name] = _pick_positives(ds.labels, degradation, _rng(seed, pick, fold))
        parts[name] = _with_artifact(ds, masks[name], artifact, _rng(seed, noise, fold), _rng(seed, _BASELINE, noise, fold))
    # The test set is fixed, and so are its baseline and its O.O.D. artifact draws: from test_seed
    # alone, shared by every trial of the target (whatever its seed), so the probe set that
    # priorities are measured on (experiment.probe_set) and test_ood are the same images for all.
    test_streams = (_NOISE_TEST, 10_000 + test_seed)
    masks["test_iid"] = np.zeros(len(index["test"]), bool)
    masks["test_ood"] = dataset.labels[index["test"]] == 0  # the correlation flipped: the artifact on every negative
    for name in ("test_iid", "test_ood"):
        parts[name] = _with_artifact(_subset(dataset, index["test"]), masks[name], artifact,
                                     _rng(test_seed, *test_streams), _rng(test_seed, _BASELINE, *test_streams))
    return Splits(
        **parts,
        index=index,
        artifact_mask=masks,
        degradation=degradation,
        fold=fold,
        seed=seed,
        artifact=artifact,
        info={"n_folds": n_folds, "val_fraction": val_fraction, "test_fraction": test_fraction, "test_seed": test_seed},
        dataset=dataset,
    )


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_arguments(dataset: ImageDataset, degradation, fold, n_folds, val_fraction, seed) -> None:
    if isinstance(degradation, bool) or not isinstance(degradation, (int, float, np.integer, np.floating)) or not 0.0 <= float(degradation) <= 1.0:
        raise ValueError(f"degradation must be in [0, 1], got {degradation!r}")
    if not _is_int(n_folds) or n_folds < 1:
        raise ValueError(f"n_folds must be an integer >= 1, got {n_folds!r}")
    if not _is_int(fold) or not 0 <= fold < n_folds:
        raise ValueError(f"fold must be an integer in [0, {n_folds}), got {fold!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    labels = np.asarray(dataset.labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"make_splits needs a binary target with labels 0/1, got labels {np.unique(labels)}")


def _as_artifact(artifact: Artifact | str | None) -> Artifact:
    if artifact is None:
        return get_artifact("none")
    if isinstance(artifact, str):
        return get_artifact(artifact)
    return artifact


def _patient_split(dataset: ImageDataset, fold: int, n_folds: int, val_fraction: float, test_fraction: float,
                   test_seed: int) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` dataset indices: the fixed test patients, then the fold's
    patient-grouped train/val split of the others."""
    pool, test = fixed_test_split(dataset, test_fraction, test_seed)
    gss = GroupShuffleSplit(n_splits=n_folds, test_size=val_fraction, random_state=1000 + test_seed)
    for f, (tr, va) in enumerate(gss.split(pool, groups=_groups(dataset)[pool])):
        if f == fold:
            break
    return {"train": np.sort(pool[tr]), "val": np.sort(pool[va]), "test": test}


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    """An independent generator per (seed, extra…, stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *extra, stream]))


def _pick_positives(labels: np.ndarray, degradation: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of exactly round(d × n_pos) positives, drawn without replacement."""
    pos = np.flatnonzero(labels == 1)
    k = artifact_count(degradation, len(pos))
    chosen = rng.choice(pos, size=k, replace=False) if k else np.empty(0, int)
    mask = np.zeros(len(labels), bool)
    mask[chosen] = True
    return mask
