"""What one trial does, without Ray: pretrain (through the store), fine-tune on a target with a
planted shortcut, measure learning priorities, and the robustness objective for searches.

Each ``run_*`` takes a :class:`~spectral_ray.config.TrialConfig` and a ``report(metrics)``
callback (``tune.report`` in a trainable, a list's ``append`` in a script or test) and returns
its final metrics. The keys are the contract with ``analysis/`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from spectral_ray import spectrum
from spectral_ray.config import TrialConfig
from spectral_ray.robustness import objective, robustness
from spectral_ray.training import Recipe

Report = Callable[[dict], None]


def _noop(_: dict) -> None:
    pass


def get_backbone(cfg: TrialConfig, on_epoch: Report | None = None) -> tuple[Path | None, dict]:
    """(checkpoint path, store metadata) for the trial's pretrained backbone, training it once
    if the store lacks it. ``source: none`` without ``source_weights`` is a random-init backbone:
    (None, {}); with weights, the store keeps them as they are (so every trial reads one file)."""
    from spectral_ray import store

    if cfg.source == "none" and cfg.source_weights is None:
        return None, {}
    path = store.get_or_train(cfg.backbone(), root=cfg.store, on_epoch=on_epoch)
    return path, store.load_meta(path)


def _priority_summaries(prefix: str, p) -> dict:
    out = {f"psd_{prefix}": [float(v) for v in p]}
    for k, v in spectrum.summarize(p).items():
        out[f"{k}_{prefix}"] = v
    for k, v in spectrum.summarize(p, exclude_dc=True).items():
        out[f"{k}_{prefix}_nodc"] = v
    return out


def artifact_band_mass(p, signature, widen: int = 0) -> float:
    """Mass of the unit-sum priority ``p`` (K+1,) in the artifact's band: the bins where the
    artifact's ``signature`` (K+1,) reaches ≥ 10 % of its peak, grown by ``widen`` bins either
    side. Integrates over the band instead of one noisy ring. Trials record ``widen=0``
    (``band_alignment_*``); the analysis's old band mass of older experiments uses 1, its
    fallback's long-standing definition (analysis.findings.artifact_alignment)."""
    p = np.asarray(p, dtype=float)
    a = np.asarray(signature, dtype=float)
    band = a >= 0.1 * a.max()
    k = np.arange(len(a))
    for _ in range(widen):
        band = band | (np.roll(band, 1) & (k > 0)) | (np.roll(band, -1) & (k < len(a) - 1))
    return float((p / p.sum())[band].sum())


PROBE_SEED = 7919  # the probe set's selection and its fresh head: fixed, never the trial's seed or fold


def source_label(source: str, source_weights: str | None) -> str:
    """What a backbone was pretrained on, from the trial's keys: the source dataset, the published
    weights (``timm`` → ``imagenet``, ``radimagenet:…`` → ``radimagenet``, ``file:…`` → the file's
    stem) or both (``<weights>+<source>``: continued pretraining); ``none`` for a random init."""
    if source_weights is None:
        return source
    from spectral_ray.weights import parse_weights_spec

    kind, path = parse_weights_spec(source_weights)
    weights = {"timm": "imagenet", "radimagenet": "radimagenet"}.get(kind) or Path(path).stem
    return weights if source == "none" else f"{weights}+{source}"


@dataclass
class ProbeSet:
    """The images a learning priority is measured on: ``images (n, C, N, N)``, ``labels (n,)``."""

    images: np.ndarray
    labels: np.ndarray


def probe_index(n_test: int, n_images: int) -> np.ndarray:
    """Rows of the test split in the probe set: ``n_images`` of ``n_test`` picked with
    :data:`PROBE_SEED`, sorted."""
    return np.sort(np.random.default_rng(PROBE_SEED).permutation(n_test)[:n_images])


def probe_set(test, n_images: int) -> ProbeSet:
    """The target's probe set: ``n_images`` images of its clean test split picked with
    :data:`PROBE_SEED` (:func:`probe_index`). The test split depends on neither fold nor seed
    (``make_splits``), so every trial of a target measures its priorities on the same images."""
    sel = probe_index(len(test), n_images)
    return ProbeSet(test.images[sel], test.labels[sel])


@dataclass
class ArtifactProbe:
    """The trial's own artifact on its probe images: ``clean`` x ``(n, C, N, N)`` (the probe set as
    the model sees a clean image: with the artifact's baseline, e.g. the baseline dose),
    ``artifacted`` A(x) (the artifact applied to the same images before any baseline, as
    ``make_splits`` plants it into training images), ``labels`` (n,), and what
    :func:`spectrum.artifact_weight` makes of them: ``weight`` w (K+1,), ``psd_artifact`` and
    ``psd_image`` (unit-sum P_art, P_img)."""

    clean: np.ndarray
    artifacted: np.ndarray
    labels: np.ndarray
    weight: np.ndarray
    psd_artifact: np.ndarray
    psd_image: np.ndarray


ARTIFACT_PROBE_STREAM = 1  # with PROBE_SEED, the artifact's draws on the probe images


def artifact_probe(splits, n_images: int) -> ArtifactProbe:
    """:class:`ArtifactProbe` of a trial: ``splits.artifact`` at the trial's resolved parameters
    on the probe images (:func:`probe_index` of ``splits.test_iid``), its noise drawn from
    (:data:`PROBE_SEED`, :data:`ARTIFACT_PROBE_STREAM`) — never the trial's seed — so every trial
    of one target and artifact measures the same w, whatever its backbone, fold or d."""
    sel = probe_index(len(splits.test_iid), n_images)
    clean = splits.test_iid.images[sel]
    originals = splits.dataset.images[splits.index["test"][sel]]
    rng = np.random.default_rng(np.random.SeedSequence([PROBE_SEED, ARTIFACT_PROBE_STREAM]))
    artifacted = np.asarray(splits.artifact(originals, rng), dtype=np.float32)
    weight, p_art, p_img = spectrum.artifact_weight(clean, artifacted)
    return ArtifactProbe(clean, artifacted, splits.test_iid.labels[sel], weight, p_art, p_img)


def probe_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with a fresh 2-class head drawn under :data:`PROBE_SEED` (the backbone
    as every trial of it measures it before fine-tuning); ``model`` and the global RNG untouched."""
    import copy

    from spectral_ray.models import replace_head

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_SEED)
        return replace_head(copy.deepcopy(model), 2)


def probe_priority(model: torch.nn.Module, images, labels) -> np.ndarray:
    """The backbone's learning priority on the probe set, through :func:`probe_model`: every trial
    of one backbone and target reports the same vector, whatever its fold, fine-tuning seed or
    shortcut. ``model`` and the global RNG are left untouched. Returns (K+1,) unit-sum."""
    return spectrum.learning_priority(probe_model(model), images, labels)


def run_pretrain(cfg: TrialConfig, report: Report = _noop) -> dict:
    """Pretrain the trial's backbone via the store; report per-epoch loss/accuracy (when this
    call trains) and the pretrained learning priority with its summaries."""
    if cfg.source == "none":
        raise ValueError("the pretrain trainable needs a source dataset (`source` is 'none')")
    epochs: list[dict] = []

    def on_epoch(m: dict) -> None:
        epochs.append(m)
        report({k: v for k, v in m.items() if isinstance(v, (int, float, bool))})

    path, meta = get_backbone(cfg, on_epoch)
    hist = meta.get("history", {})
    final = {
        "pretrain_key": meta.get("key"),
        "source_label": source_label(cfg.source, cfg.source_weights),
        "trained_here": bool(epochs),
        "pretrain_time_s": meta.get("train_time_s"),
        "device": hist.get("device"),  # where the backbone was trained (by this trial or an earlier one)
        "val_accuracy": (hist.get("epochs") or [{}])[-1].get("val_accuracy"),
        "input_mean": (hist.get("input_normalization") or {}).get("mean"),
        "input_std": (hist.get("input_normalization") or {}).get("std"),
        **_priority_summaries("pretrained", hist["learning_priority"]),
        "done": True,
    }
    report(final)
    return final


def run_finetune(cfg: TrialConfig, report: Report = _noop, *, tensorboard_dir: str | Path | None = None,
                 checkpoint_path: str | Path | None = None, checkpoint: str = "full") -> dict:
    """Fine-tune on (target, artifact, degradation, fold) and measure what the paper measures.

    Reports per epoch ``epoch, train_loss, val_loss, val_auc, iid_auc, ood_auc`` (plus accuracies,
    losses and timing); the final report adds the learning priorities before (``psd_pretrained``:
    the backbone on its source, from the store; ``psd_probe``: the backbone with a fresh head on
    the target's probe set, :func:`probe_set` and :func:`probe_priority`, also reported as
    ``psd_before``) and after fine-tuning (``psd_finetuned``, the probe set), ``source_label``,
    ``artifact_resolved`` (the artifact's parameters with its defaults filled in), their
    summaries (``_nodc`` variants drop the DC bin), the artifact's signature ``psd_artifact`` and
    the alignment of each priority with it (``alignment_``, ``cosine_``, ``band_alignment_``: on
    synthetic reference images, degenerate for broadband artifacts).

    The shortcut alignment (docs/SCIENCE.md, "Alignment"), of the trial's own artifact at its
    resolved parameters and dose on its probe images (:func:`artifact_probe`,
    :func:`_shortcut_metrics`): ``artifact_weight`` (K+1 floats, w_0 = 0), ``psd_artifact_probe``,
    ``psd_image_probe`` (unit-sum), ``artifact_weight_images``, ``artifact_weight_seed``,
    ``shortcut_alignment_{pretrained,probe,finetuned}`` ∈ [0, 1],
    ``artifact_sensitivity[_rel]_{probe,finetuned}`` (E[(∇ₓℓ·δ)²]; E[(g·δ)²]/E[|g|²|δ|²]). Seeds
    (ints): ``finetune_seed_used``, ``artifact_seed_used`` (``TrialConfig.derived_seed`` unless
    set), ``random_init_seed`` (the fine-tuning seed when it drew a random-init backbone,
    else None). ``checkpoint_path`` gets the fine-tuned model:
    ``checkpoint="full"`` the whole network but its head, ``"head"`` only the small classifier
    (the pretrained backbone stays in the store, named by ``pretrain_key``).
    """
    from spectral_ray.models import input_normalization
    from spectral_ray.training import fit

    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    ckpt, meta = get_backbone(cfg)
    t_backbone = time.time() - t_start
    start = start_trial(cfg, ckpt, meta)
    artifact, splits, model, seed = start.artifact, start.splits, start.model, cfg.effective_finetune_seed
    probe, art_probe = start.before.probe, start.before.artifact
    priorities, sensitivity = dict(start.before.priorities), dict(start.before.sensitivity)

    epochs = _EpochReporter(report, model, probe, tensorboard_dir)
    recipe = finetune_recipe(cfg)
    history = fit(model, splits.train, splits.val, recipe, seed=seed,
                  eval_sets={"iid": splits.test_iid, "ood": splits.test_ood}, on_epoch=epochs)
    t_psd = time.time()
    priorities["finetuned"] = spectrum.learning_priority(model, probe.images, probe.labels)
    sensitivity["finetuned"] = _sensitivity(model, art_probe)
    t_psd = time.time() - t_psd

    signature = artifact.signature(cfg.size)
    final: dict = {
        **_outcome(history),
        "pretrain_key": meta.get("key"),
        "source_label": source_label(cfg.source, cfg.source_weights),
        "artifact_resolved": dict(artifact.params),  # every parameter the artifact ran with
        **_seeds_used(cfg, ckpt),
        "psd_pretrained_on": priorities.pop("pretrained_on"),
        **_split_sizes(splits),
        "psd_artifact": [float(v) for v in signature],
        "time_backbone_s": t_backbone,
        "time_finetune_s": history.get("train_time_s"),
        "time_psd_s": t_psd,
        "images_per_s": history.get("images_per_s"),
        "device": history.get("device"),  # e.g. "cuda" or "cpu": where the fine-tuning ran
        # the model's input normalisation (its starting point's preprocessing; None = raw [0, 1] images)
        "input_mean": (input_normalization(model) or {}).get("mean"),
        "input_std": (input_normalization(model) or {}).get("std"),
        "done": True,
    }
    final.update(_priority_metrics(priorities, signature))
    final.update(_shortcut_metrics(priorities, art_probe, sensitivity))
    epochs.finish(final, cfg)
    if checkpoint_path is not None:
        from spectral_ray.models import save_backbone, save_head

        save = {"full": save_backbone, "head": save_head}[checkpoint]
        save(model, checkpoint_path, meta={"trial": cfg.model_dump(mode="json"), "pretrain_key": meta.get("key")})
    report(final)
    return final


@dataclass
class ProbeMeasures:
    """What a trial measures of its starting model on its probe images before fine-tuning:
    ``probe`` (:func:`probe_set`), ``priorities`` (:func:`_priorities_before`: ``before``,
    ``probe``, ``pretrained`` (K+1,) unit-sum, ``pretrained_on``), ``artifact``
    (:func:`artifact_probe`: the artifact weight w and its spectra) and ``sensitivity``
    (``{"probe": …}``: :func:`spectrum.artifact_sensitivity` of :func:`probe_model`); the last
    two None where only the priorities were asked for."""

    probe: ProbeSet
    priorities: dict
    artifact: ArtifactProbe | None
    sensitivity: dict | None


def measure_probe(model: torch.nn.Module, splits, n_images: int, meta: dict, ckpt: Path | None, *,
                  artifact: bool = True) -> ProbeMeasures:
    """:class:`ProbeMeasures` of ``model`` (a trial's :func:`starting_model`, left untouched, as is
    the global RNG) on the ``n_images`` probe images of ``splits``; without ``artifact`` only the
    priorities (the artifact's sensitivity costs as many backward passes as a priority)."""
    probe = probe_set(splits.test_iid, n_images)
    priorities = _priorities_before(model, probe, meta, ckpt)
    if not artifact:
        return ProbeMeasures(probe, priorities, None, None)
    art_probe = artifact_probe(splits, n_images)
    return ProbeMeasures(probe, priorities, art_probe, {"probe": _sensitivity(probe_model(model), art_probe)})


@dataclass
class TrialStart:
    """A trial up to fine-tuning: its ``artifact`` and ``splits`` (:func:`trial_splits`), its
    starting ``model`` (:func:`starting_model`) and what it measured of it (``before``)."""

    artifact: object
    splits: object
    model: torch.nn.Module
    before: ProbeMeasures


def start_trial(cfg: TrialConfig, ckpt: Path | None, meta: dict, *, artifact: bool = True) -> TrialStart:
    """The steps of :func:`run_finetune` before fine-tuning, for the backbone (``ckpt``, ``meta``:
    :func:`get_backbone`): :func:`trial_splits` → :func:`starting_model` → :func:`measure_probe`
    (``artifact``: passed on). ``spectral-ray risk`` measures a backbone through this too, so both
    measure alike."""
    torch.set_num_threads(cfg.threads)
    planted, splits = trial_splits(cfg)
    model = starting_model(cfg, ckpt, meta, cfg.effective_finetune_seed)
    before = measure_probe(model, splits, cfg.psd_images, meta, ckpt, artifact=artifact)
    return TrialStart(planted, splits, model, before)


def trial_splits(cfg: TrialConfig):
    """``(artifact, splits)``: the trial's target with its planted shortcut, split for its fold
    (:func:`spectral_ray.protocol.make_splits`)."""
    from spectral_ray.artifacts import get_artifact
    from spectral_ray.data import get_dataset
    from spectral_ray.protocol import make_splits

    params = {"size": cfg.size, "channels": cfg.channels, "seed": cfg.data_seed, **cfg.target_params}
    if cfg.target_n is not None:
        params["n"] = cfg.target_n
    target = get_dataset(cfg.target, **params)
    artifact = get_artifact(cfg.artifact, **cfg.artifact_kwargs())
    splits = make_splits(target, artifact, cfg.degradation, cfg.fold, cfg.effective_artifact_seed,
                         n_folds=cfg.n_folds)
    return artifact, splits


def starting_model(cfg: TrialConfig, ckpt: Path | None, meta: dict, seed: int) -> torch.nn.Module:
    """The model fine-tuning starts from: the pretrained backbone (random init without one) with a
    fresh 2-class head, initialised under ``torch.manual_seed(seed)``."""
    from spectral_ray.models import create_model, load_backbone, replace_head

    torch.manual_seed(seed)
    if ckpt is None:
        return create_model(cfg.model, in_chans=cfg.channels, num_classes=2)
    n_source_classes = max(2, len(meta["history"]["classes"]))
    model = create_model(cfg.model, in_chans=cfg.channels, num_classes=n_source_classes)
    load_backbone(model, ckpt)
    replace_head(model, 2)
    return model


def stored_probe_priority(model: torch.nn.Module, probe: ProbeSet, ckpt: Path | None) -> torch.Tensor:
    """:func:`probe_priority` of a stored backbone, computed once per (backbone, probe images,
    device, code) and kept beside the backbone in the store (``probe_priority/<hash>.npy``): every
    trial of one backbone and target measures the identical vector, so the others read it
    (its cost: BENCHMARKS.md). Without a stored backbone (random init) it is computed."""
    if ckpt is None:
        return probe_priority(model, probe.images, probe.labels)
    import hashlib

    from spectral_ray import store
    from spectral_ray.data.codeversion import hash_modules, module_closure

    h = hashlib.sha256(f"{PROBE_SEED}:{next(model.parameters()).device.type}:".encode())
    # the code that measures it: this module (probe_priority), what it imports, and the models
    h.update(hash_modules(module_closure("spectral_ray.experiment") + module_closure("spectral_ray.models"),
                          "probe").encode())
    for a in (probe.images, probe.labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
    path = Path(ckpt).parent / "probe_priority" / f"{h.hexdigest()[:24]}.npy"
    stored = store.load_array_checked(path)  # None when absent or damaged (then recomputed)
    if stored is not None:
        return torch.from_numpy(stored)
    p = probe_priority(model, probe.images, probe.labels)
    store.save_array_checked(path, p.numpy())
    return p


def _priorities_before(model, probe: ProbeSet, meta: dict, ckpt: Path | None = None) -> dict:
    """``{"before", "probe", "pretrained", "pretrained_on"}``: the backbone's priority on the probe
    set with a fresh head drawn under :data:`PROBE_SEED` (:func:`stored_probe_priority`; ``before``
    and ``probe`` are that one vector), and the pretrained one, measured on the source by the store; a backbone with no
    source data of its own (random init, published weights as they are) is measured on the
    clean target instead (then it equals ``before``)."""
    before = stored_probe_priority(model, probe, ckpt)
    pretrained = (meta.get("history") or {}).get("learning_priority")
    return {"before": before, "probe": before, "pretrained": before if pretrained is None else pretrained,
            "pretrained_on": "source" if pretrained is not None else "target"}


def finetune_recipe(cfg: TrialConfig) -> Recipe:
    """The trial's fine-tuning :class:`~spectral_ray.training.Recipe` (threads from ``cfg.threads``)."""
    return Recipe.from_dict({**cfg.finetune, "num_threads": cfg.threads})


class _EpochReporter:
    """``on_epoch`` for :func:`fit`: reports each epoch's scalars; with a TensorBoard folder also
    measures a cheap priority per epoch for the PSD-over-epochs heat map and writes the curves
    and the HParams entry at the end (:meth:`finish`)."""

    def __init__(self, report: Report, model, probe: ProbeSet, tensorboard_dir: str | Path | None):
        self.report, self.model, self.probe = report, model, probe
        self.psds: list[np.ndarray] = []
        self.tb = None
        if tensorboard_dir is not None:
            from spectral_ray.tensorboard import TrialWriter

            self.tb = TrialWriter(tensorboard_dir)

    def __call__(self, m: dict) -> None:
        metrics = {k: v for k, v in m.items() if isinstance(v, (int, float, bool))}
        if self.tb is not None:
            # 32 images, a small share of an epoch (bench/overheads.py, BENCHMARKS.md)
            p = self.probe
            self.psds.append(spectrum.learning_priority(self.model, p.images[:32], p.labels[:32]).numpy())
        self.report(metrics)

    def finish(self, final: dict, cfg: TrialConfig) -> None:
        if self.tb is not None:
            self.tb.final(final, self.psds)  # the HParams entry: the driver's (trainables/hparams.py)
            self.tb.close()


def _outcome(history: dict) -> dict:
    """The AUCs the trial stands on: of the weights fit returned (the best epoch's by val loss
    when early stopping restored them, otherwise the last epoch's)."""
    best = history["final"]
    return {
        "iid_auc": best["iid_auc"],
        "ood_auc": best["ood_auc"],
        "val_auc": best["val_auc"],
        "iid_ood_gap": best["iid_auc"] - best["ood_auc"],
        "best_epoch": history.get("best_epoch"),
        "stopped_early": history.get("stopped_early"),
    }


def _split_sizes(splits) -> dict:
    return {
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test_iid),
        "n_artifact_train": int(splits.artifact_mask["train"].sum()),
    }


def _priority_metrics(priorities: dict, signature) -> dict:
    """For each named priority: the curve, its summaries and its alignment with the artifact."""
    out = {}
    for name in ("pretrained", "before", "probe", "finetuned"):
        p = priorities[name]
        out.update(_priority_summaries(name, p))
        out[f"alignment_{name}"] = spectrum.alignment(p, signature)
        out[f"cosine_{name}"] = spectrum.cosine(p, signature)
        out[f"band_alignment_{name}"] = artifact_band_mass(p, signature)
    return out


def _seeds_used(cfg: TrialConfig, ckpt: Path | None) -> dict:
    """The seeds the trial ran with (its own keys, else derived from its backbone and fold:
    ``TrialConfig.derived_seed``); ``random_init_seed``: the fine-tuning seed when it also drew a
    random-init backbone, else None."""
    seed = int(cfg.effective_finetune_seed)
    return {"finetune_seed_used": seed, "artifact_seed_used": int(cfg.effective_artifact_seed),
            "random_init_seed": seed if ckpt is None else None}


def _sensitivity(model: torch.nn.Module, probe: ArtifactProbe) -> dict:
    return spectrum.artifact_sensitivity(model, probe.clean, probe.artifacted, probe.labels)


def _shortcut_metrics(priorities: dict, probe: ArtifactProbe, sensitivity: dict) -> dict:
    """The artifact-weighted, DC-free alignment of each priority (docs/SCIENCE.md, "Alignment")
    with how w was measured, and the model-native check before and after fine-tuning:

    ``artifact_weight`` (K+1 floats in [0, 1], w_k = P_art/(P_art + P_img), w_0 = 0),
    ``psd_artifact_probe`` / ``psd_image_probe`` (unit-sum P_art, P_img), ``artifact_weight_images``
    (probe images it was measured on), ``artifact_weight_seed`` (its generator's seed),
    ``shortcut_alignment_{pretrained,probe,finetuned}`` (Σ_{k≥1} p̃_k w_k),
    ``artifact_sensitivity_{probe,finetuned}`` (E[(∇ₓℓ·δ)²], δ = A(x) − x, (loss units)²; probe:
    the backbone with the :data:`PROBE_SEED` head) and ``artifact_sensitivity_rel_*``
    (E[(g·δ)²]/E[|g|²|δ|²] ∈ [0, 1])."""
    out = {
        "artifact_weight": [float(v) for v in probe.weight],
        "psd_artifact_probe": [float(v) for v in probe.psd_artifact],
        "psd_image_probe": [float(v) for v in probe.psd_image],
        "artifact_weight_images": int(len(probe.clean)),
        "artifact_weight_seed": PROBE_SEED,
    }
    for name in ("pretrained", "probe", "finetuned"):
        out[f"shortcut_alignment_{name}"] = spectrum.shortcut_alignment(priorities[name], probe.weight)
    for name, s in sensitivity.items():
        out[f"artifact_sensitivity_{name}"] = s["sensitivity"]
        out[f"artifact_sensitivity_rel_{name}"] = s["relative"]
    return out


def run_robustness(cfg: TrialConfig, report: Report = _noop) -> dict:
    """The search objective: fine-tune across ``cfg.degradations`` × ``cfg.folds`` and report
    ``robustness`` = mean O.O.D. AUC, ``iid_mean`` and ``objective`` (robustness, less the
    shortfall of ``iid_mean`` below ``iid_floor`` when one is set). Reports after each
    degradation level (``training_iteration`` = levels done) so ASHA can stop early."""
    ood, iid, levels = [], [], []
    for i, d in enumerate(cfg.degradations, start=1):
        for fold in cfg.folds:
            r = run_finetune(cfg.model_copy(update={"degradation": d, "fold": fold}))
            ood.append(r["ood_auc"])
            iid.append(r["iid_auc"])
            levels.append(d)
        scores = {"robustness": robustness(ood, levels), "iid_mean": robustness(iid, levels)}
        scores["objective"] = objective(scores["robustness"], scores["iid_mean"], cfg.iid_floor)
        report({**scores, "levels_done": i, f"ood_auc_d{d:g}": float(np.mean(ood[-len(cfg.folds):])),
                **({"done": True} if i == len(cfg.degradations) else {})})
    return scores
