"""Simulated experiments with the columns :func:`analysis.collect.collect` produces, for testing
the findings under known nulls and planted effects (tests/test_findings_sim.py, docs/FINDINGS.md).

A :class:`Design` is a sweep grid (sources × pretraining seeds × edit strengths × shortcuts ×
degradations × folds); :class:`Effects` says which effects are real. Every trial is generated
from its identities, so the table has the structure of a real sweep:

* one priority per pretrained model (``psd_probe``, identical for all its trials), drawn around a
  source's mean shape with model-to-model variation (``model_sd``); ``source_effect`` (F1) moves
  the sources' means apart, ``edit_centroid`` (F5) adds mid-frequency mass to edited models;
* one network per (model, fold, degradation[, shortcut at d > 0]): d = 0 twins share their
  ``psd_finetuned`` and I.I.D. AUC, and their O.O.D. AUCs differ only by scoring noise;
  ``persist`` (F2) is the share of the pretrained priority the fine-tuned one keeps;
* O.O.D. AUC = clean AUC − d × (``ood_fall`` (F3) + ``omega_drop`` × (1 − ω) (a drop that depends
  on the artifact's frequency only) + ``alignment_effect`` × standardised alignment (F4) +
  ``edit_robustness`` if edited (F5) + a model-level random effect ``drop_sd`` unrelated to
  alignment); values beyond [0.03, 0.99] are pinned at exactly 0 or 1 (ties).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spectral_ray.spectrum import band_mass

__all__ = ["Design", "Effects", "QUICK", "SEEDS", "simulate"]

BINS = 33  # 64 px images


@dataclass(frozen=True)
class Design:
    sources: tuple = ("natural", "medical")
    seeds: tuple = (0,)
    edit_strengths: tuple = (0.0, 1.0)
    shortcuts: tuple = ((0.25, 0.1), (0.75, 0.2))  # (ω, amplitude) of a band artifact
    degradations: tuple = (0.0, 0.5, 1.0)
    folds: tuple = (0, 1)
    bandwidth: float = 0.05

    @property
    def n_models(self) -> int:
        return len(self.sources) * len(self.seeds) * len(self.edit_strengths)


QUICK = Design()  # sweeps/embedded-quick.yaml's grid: 48 trials, 4 pretrained models
SEEDS = Design(seeds=(0, 1, 2, 3), shortcuts=((0.25, 0.1), (0.5, 0.1), (0.75, 0.1)), folds=(0, 1, 2))


@dataclass(frozen=True)
class Effects:
    source_effect: float = 0.0     # F1: relative difference of the sources' spectral decay
    persist: float = 0.0           # F2: share of the pretrained priority kept by fine-tuning
    ood_fall: float = 0.0          # F3: O.O.D. AUC lost per unit degradation, every model
    iid_fall: float = 0.0          # F3: I.I.D. AUC lost per unit degradation
    omega_drop: float = 0.0        # null for F4: extra loss at low ω, the same for every model
    alignment_effect: float = 0.0  # F4: extra loss per standard deviation of alignment
    edit_centroid: float = 0.0     # F5: mid-frequency mass added to edited models' priorities
    edit_robustness: float = 0.0   # F5: extra O.O.D. loss per unit degradation if edited
    model_sd: float = 0.15         # model-to-model variation of the priority (log scale)
    drop_sd: float = 0.08          # model-level random effect on the O.O.D. drop (unrelated to alignment)
    auc_model_sd: float = 0.03     # model-level random effect on AUC
    noise_sd: float = 0.03         # fine-tuning noise of an AUC
    extra: dict = field(default_factory=dict)


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def _unit(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


def _backbone_priority(design: Design, fx: Effects, seed: int, source: str, strength: float, model_seed: int) -> np.ndarray:
    k = np.arange(BINS)
    sign = design.sources.index(source) - (len(design.sources) - 1) / 2
    decay = 5.0 * (1 + fx.source_effect * sign)
    r = _rng(seed, "backbone", source, strength, model_seed)
    wiggle = sum(r.standard_normal() * np.cos(np.pi * j * k / (BINS - 1)) for j in range(1, 4))
    p = _unit(np.exp(-k / decay + fx.model_sd * wiggle) + 1e-3)
    if strength:  # the edit adds mid-frequency mass (edit_centroid of the total per unit strength)
        p = p + fx.edit_centroid * strength * _unit(np.exp(-0.5 * ((k - BINS / 2) / 3) ** 2))
    return _unit(p)


def _rows_of_unit(design, fx, seed, backbone, psd, align_z, fold, base) -> list[dict]:
    """The trials of one (model, fold) unit: every shortcut × degradation."""
    src, strength, model_seed = backbone
    target = _unit(np.exp(-np.arange(BINS) / 3.0))
    rows = []
    for d in design.degradations:
        for omega, amp in design.shortcuts:
            net = (d, omega, amp) if d > 0 else (0.0,)  # at d = 0 the shortcut never enters training
            rn = _rng(seed, "net", backbone, fold, net)
            art = _unit(np.exp(-0.5 * ((np.arange(BINS) - omega * (BINS - 1)) / 0.7) ** 2))
            ft = _unit(fx.persist * psd + (1 - fx.persist) * target * np.exp(0.05 * rn.standard_normal(BINS)) + 0.05 * d * art)
            iid = base["iid"] - fx.iid_fall * d + fx.noise_sd * rn.standard_normal()
            drop = d * (fx.ood_fall + fx.omega_drop * (1 - omega) + fx.alignment_effect * align_z[(omega, amp)]
                        + (fx.edit_robustness if strength else 0.0) + base["drop"])
            ood = base["iid"] - drop + fx.noise_sd * _rng(seed, "score", backbone, fold, d, omega, amp).standard_normal()
            rows.append({"source": src, "edit_strength": strength, "seed": model_seed, "fold": fold, "degradation": d,
                         "artifact_omega": omega, "artifact_amplitude": amp, "iid_auc": iid, "ood_auc": ood,
                         "psd_probe": psd, "psd_finetuned": ft, "psd_artifact": art})
    return rows


def _pin(auc: pd.Series) -> pd.Series:
    a = auc.clip(0.0, 1.0)
    return a.mask(a < 0.03, 0.0).mask(a > 0.99, 1.0)


def simulate(design: Design = QUICK, effects: Effects = Effects(), seed: int = 0) -> pd.DataFrame:
    """One simulated experiment: a trials table like ``collect(...).trials`` (finished trials)."""
    rows = []
    backbones = [(s, e, r) for s in design.sources for r in design.seeds for e in design.edit_strengths]
    psds = {b: _backbone_priority(design, effects, seed, b[0], b[1], b[2]) for b in backbones}
    align = {(b, sc): band_mass(psds[b], sc[0], design.bandwidth) for b in backbones for sc in design.shortcuts}
    for b in backbones:
        rb = _rng(seed, "model effects", b)
        base_model = {"iid": 0.8 + effects.auc_model_sd * rb.standard_normal(), "drop": effects.drop_sd * rb.standard_normal()}
        align_z = {}
        for sc in design.shortcuts:
            vals = np.array([align[(o, sc)] for o in backbones])
            align_z[sc] = (align[(b, sc)] - vals.mean()) / (vals.std() or 1.0)
        for fold in design.folds:
            rf = _rng(seed, "fold", b, fold)
            base = {**base_model, "iid": base_model["iid"] + effects.noise_sd * rf.standard_normal()}
            rows += _rows_of_unit(design, effects, seed, b, psds[b], align_z, fold, base)
    t = pd.DataFrame(rows)
    t["iid_auc"], t["ood_auc"] = _pin(t["iid_auc"]), _pin(t["ood_auc"])
    edited = t["edit_strength"] != 0
    t = t.assign(kind="finetune", status="TERMINATED", trial_id=[f"sim{i:05d}" for i in range(len(t))],
                 source_weights=None, source_label=t["source"], edit=np.where(edited, "band_gain", "none"),
                 edit_omega=np.where(edited, 0.5, None), finetune_seed=None, target="ct_lesion", data_seed=0, n_folds=5,
                 artifact="band", model="resnet10t", size=64, channels=1, psd_images=128,
                 pretrain_key=[f"key-{s}-{e:g}-{r}" for s, e, r in zip(t["source"], t["edit_strength"], t["seed"])])
    t["artifact_resolved/omega"], t["artifact_resolved/amplitude"] = t["artifact_omega"], t["artifact_amplitude"]
    t["artifact_resolved/bandwidth"] = design.bandwidth
    t["psd_pretrained"], t["psd_pretrained_on"] = t["psd_probe"], "source"
    t.attrs["config_columns"] = ["source", "source_weights", "edit", "edit_strength", "edit_omega", "seed", "target",
                                 "artifact", "artifact_omega", "artifact_amplitude", "degradation", "fold",
                                 "finetune_seed", "data_seed", "n_folds", "model", "size", "channels", "psd_images"]
    return t
