"""Simulated experiments with the columns :func:`analysis.collect.collect` produces, for testing
the findings under known nulls and planted effects (tests/test_findings_sim.py, docs/FINDINGS.md)
and for measuring a finding's power at a real experiment's design (analysis/power.py).

A :class:`Design` is a sweep grid (sources × pretraining seeds × edit strengths × shortcuts ×
degradations × folds); :class:`Effects` says which effects are real. Every trial is generated
from its identities, so the table has the structure of a real sweep:

* every pretrained model has a **latent frequency reliance** ``s`` (K+1 bins): a source's mean
  shape (``source_effect`` (F1) moves the sources apart), model-to-model variation (``model_sd``;
  a share ``seed_share`` of it comes from the pretraining seed, so siblings of one seed resemble
  each other), and for edited models ``edit_centroid`` (F5) of mid-frequency mass. The
  *observed* priority ``psd_probe`` is a noisy measurement of it (``probe_noise``, log scale):
  F4 never sees ``s`` itself;
* every shortcut has an artifact weight ``w_k = P_art/(P_art + P_img)`` (w_0 = 0) on the probe
  images: band rings (ω, amplitude) or broadband artifacts (``photon_noise``: white noise, weight
  rising with k; ``nlm``: the removed fine texture, weight in the upper bands);
* one network per (model, fold, degradation[, shortcut at d > 0]): d = 0 twins share their
  ``psd_finetuned`` and I.I.D. AUC; ``persist`` (F2) is the share of the pretrained priority the
  fine-tuned one keeps;
* O.O.D. AUC = clean AUC − d × (``ood_fall`` (F3) + ``omega_drop`` × (1 − ω) (the artifact's
  frequency only) + ``source_drop`` for the second source (a source-level susceptibility
  unrelated to alignment) + ``alignment_effect`` × z (F4: z = the *latent* reliance's weighted
  alignment Σ s̃_k w_k, as a deviation from its source's mean in that source's standard
  deviations: an effect within sources, which a source difference cannot imitate) + ``edit_robustness`` if edited (F5)
  + a model effect ``drop_sd`` + a seed-block effect ``seed_block_sd`` shared by every backbone of
  one pretraining seed (shared initialisation) + an assignment effect ``assignment_sd`` per
  (seed, fold, shortcut, d) shared by the seed's backbones under the *old* seeding (fine-tuning and
  artifact-assignment seed = pretraining seed), drawn per backbone under the new one);
  ``edit_clean_gain`` lifts edited models' I.I.D. and O.O.D. AUC alike at every d (a clean-task
  gain, no shortcut effect). AUCs beyond [0.03, 0.99] are pinned at exactly 0 or 1 (ties).

The table carries the trial's new columns (``finetune_seed_used``, ``artifact_seed_used`` under
the new seeding, ``artifact_weight``, ``psd_artifact_probe``, ``psd_image_probe``,
``shortcut_alignment_{pretrained,probe,finetuned}``, ``artifact_sensitivity_{,rel_}{probe,finetuned}``)
unless ``Design.legacy_columns`` asks for an older experiment's table without them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spectral_ray.spectrum import shortcut_alignment as weighted_alignment  # the trials' own rule

__all__ = ["Design", "Effects", "QUICK", "SEEDS", "BROADBAND", "simulate", "artifact_weight"]

BINS = 33  # 64 px images
BROADBAND = ("photon_noise", "nlm")


@dataclass(frozen=True)
class Design:
    sources: tuple = ("natural", "medical")
    seeds: tuple = (0,)
    edit_strengths: tuple = (0.0, 1.0)
    shortcuts: tuple = ((0.25, 0.1), (0.75, 0.2))  # (ω, amplitude) of a band artifact
    broadband: tuple = ()                          # names from BROADBAND, one shortcut each
    degradations: tuple = (0.0, 0.5, 1.0)
    folds: tuple = (0, 1)
    bandwidth: float = 0.05
    edited_seeds: tuple | None = None  # seeds that have edited siblings (None: every seed)
    edited_sources: tuple | None = None  # sources that have edited arms (None: every source)
    old_seeding: bool = False          # fine-tuning/artifact seed = pretraining seed (siblings share them)
    legacy_columns: bool = False       # omit the columns trials report since findings round 2

    @property
    def n_models(self) -> int:
        return len(self.backbones())

    def backbones(self) -> list[tuple]:
        """(source, edit strength, seed) of every pretrained model."""
        edited = self.seeds if self.edited_seeds is None else self.edited_seeds
        sources = self.sources if self.edited_sources is None else self.edited_sources
        return [(s, e, r) for s in self.sources for r in self.seeds for e in self.edit_strengths
                if e == 0 or (r in edited and s in sources)]


QUICK = Design()  # sweeps/embedded-quick.yaml's grid: 48 trials, 4 pretrained models
SEEDS = Design(seeds=(0, 1, 2, 3), shortcuts=((0.25, 0.1), (0.5, 0.1), (0.75, 0.1)), folds=(0, 1, 2))


@dataclass(frozen=True)
class Effects:
    source_effect: float = 0.0     # F1: relative difference of the sources' spectral decay
    persist: float = 0.0           # F2: share of the pretrained priority kept by fine-tuning
    ood_fall: float = 0.0          # F3: O.O.D. AUC lost per unit degradation, every model
    iid_fall: float = 0.0          # F3: I.I.D. AUC lost per unit degradation
    omega_drop: float = 0.0        # null for F4: extra loss at low ω, the same for every model
    source_drop: float = 0.0       # null for F4: the second source loses this much more per unit d
    alignment_effect: float = 0.0  # F4: extra loss per within-source SD of the latent weighted alignment (deviation from the source mean)
    edit_centroid: float = 0.0     # F5: mid-frequency mass added to edited models' reliance
    edit_robustness: float = 0.0   # F5: extra O.O.D. loss per unit degradation if edited
    edit_clean_gain: float = 0.0   # null for F5: edited models better on the clean task at every d
    model_sd: float = 0.15         # model-to-model variation of the reliance (log scale)
    seed_share: float = 0.0        # share of that variation a pretraining seed gives all its backbones
    probe_noise: float = 0.05      # measurement noise of psd_probe around the latent reliance (log scale)
    drop_sd: float = 0.08          # model-level random effect on the O.O.D. drop (unrelated to alignment)
    seed_block_sd: float = 0.0     # random effect on the drop shared by the backbones of one seed
    assignment_sd: float = 0.0     # per (fold, shortcut, d) effect of the artifact assignment
    auc_model_sd: float = 0.03     # model-level random effect on AUC
    noise_sd: float = 0.03         # fine-tuning noise of an AUC
    extra: dict = field(default_factory=dict)


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def _unit(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


K = np.arange(BINS)
TARGET_PSD = _unit(np.exp(-K / 3.0))  # the probe images' radial PSD (P_img)


def artifact_weight(spec: tuple) -> np.ndarray:
    """w_k = P_art(k) / (P_art(k) + P_img(k)) of a shortcut ``spec`` on the simulated probe images,
    (BINS,), w_0 = 0: ``(ω, amplitude)`` a band ring, ``("photon_noise",)`` white noise,
    ``("nlm",)`` the fine texture non-local means removes."""
    if spec[0] == "photon_noise":
        art = np.full(BINS, 0.004)
    elif spec[0] == "nlm":
        art = 0.6 * TARGET_PSD * (1 / (1 + np.exp(-(K - 0.45 * BINS) / 2.5)))
    else:
        omega, amp = spec
        art = 40 * amp**2 * np.exp(-0.5 * ((K - omega * (BINS - 1)) / 0.7) ** 2)
    w = art / (art + TARGET_PSD)
    w[0] = 0.0
    return w


def _wiggle(r: np.random.Generator) -> np.ndarray:
    return sum(r.standard_normal() * np.cos(np.pi * j * K / (BINS - 1)) for j in range(1, 4))


def _reliance(design: Design, fx: Effects, seed: int, backbone: tuple) -> np.ndarray:
    source, strength, model_seed = backbone
    sign = design.sources.index(source) - (len(design.sources) - 1) / 2
    decay = 5.0 * (1 + fx.source_effect * sign)
    own, shared = _wiggle(_rng(seed, "backbone", backbone)), _wiggle(_rng(seed, "seed", model_seed))
    wiggle = np.sqrt(1 - fx.seed_share) * own + np.sqrt(fx.seed_share) * shared
    s = _unit(np.exp(-K / decay + fx.model_sd * wiggle) + 1e-3)
    if strength:  # the edit adds mid-frequency mass (edit_centroid of the total per unit strength)
        s = s + fx.edit_centroid * strength * _unit(np.exp(-0.5 * ((K - BINS / 2) / 3) ** 2))
    return _unit(s)


def _shortcuts(design: Design) -> list[dict]:
    out = [{"artifact": "band", "artifact_omega": o, "artifact_amplitude": a, "spec": (o, a), "omega": o}
           for o, a in design.shortcuts]
    for name in design.broadband:
        if name not in BROADBAND:
            raise ValueError(f"Design.broadband: unknown artifact {name!r}; allowed: {', '.join(BROADBAND)}")
        out.append({"artifact": name, "artifact_omega": None, "artifact_amplitude": None, "spec": (name,), "omega": 1.0})
    for sc in out:
        sc["w"] = artifact_weight(sc["spec"])
    return out


def _alignment_z(design: Design, reliance: dict, shortcuts: list[dict]) -> dict:
    """z of the latent weighted alignment per (backbone, shortcut): its deviation from the source's
    mean, in units of that source's SD (the within-source effect ``alignment_effect`` scales);
    sources with one model get 0."""
    out = {}
    for sc in shortcuts:
        a = {b: weighted_alignment(s, sc["w"]) for b, s in reliance.items()}
        by_source = {src: np.array([v for b, v in a.items() if b[0] == src]) for src in design.sources}
        out.update({(b, sc["spec"]): (v - by_source[b[0]].mean()) / (by_source[b[0]].std() or 1.0) for b, v in a.items()})
    return out


def _net_rows(design, fx, seed, backbone, psd, fold, base, shortcuts, z) -> list[dict]:
    """The trials of one (model, fold) unit: every shortcut × degradation."""
    src, strength, model_seed = backbone
    rows = []
    for d in design.degradations:
        for sc in shortcuts:
            net = (d, sc["spec"]) if d > 0 else (0.0,)  # at d = 0 the shortcut never enters training
            rn = _rng(seed, "net", backbone, fold, net)
            ft = _unit(fx.persist * psd + (1 - fx.persist) * TARGET_PSD * np.exp(0.05 * rn.standard_normal(BINS))
                       + 0.05 * d * sc["w"] / sc["w"].sum())
            who = model_seed if design.old_seeding else backbone  # whose artifact assignment this is
            assign = fx.assignment_sd * _rng(seed, "assignment", who, fold, sc["spec"], d).standard_normal()
            clean = base["iid"] + (fx.edit_clean_gain if strength else 0.0)
            iid = clean - fx.iid_fall * d + fx.noise_sd * rn.standard_normal()
            drop = d * (fx.ood_fall + fx.omega_drop * (1 - sc["omega"]) + fx.alignment_effect * z[(backbone, sc["spec"])]
                        + (fx.source_drop if design.sources.index(src) == 1 else 0.0)
                        + (fx.edit_robustness if strength else 0.0) + base["drop"] + assign)
            ood = clean - drop + fx.noise_sd * _rng(seed, "score", backbone, fold, d, sc["spec"]).standard_normal()
            rows.append({"source": src, "edit_strength": strength, "seed": model_seed, "fold": fold, "degradation": d,
                         "artifact": sc["artifact"], "artifact_omega": sc["artifact_omega"],
                         "artifact_amplitude": sc["artifact_amplitude"], "iid_auc": iid, "ood_auc": ood,
                         "psd_probe": psd, "psd_finetuned": ft, "artifact_weight": sc["w"], "_z": z[(backbone, sc["spec"])],
                         "_rn": rn.standard_normal(2)})
    return rows


def _pin(auc: pd.Series) -> pd.Series:
    a = auc.clip(0.0, 1.0)
    return a.mask(a < 0.03, 0.0).mask(a > 0.99, 1.0)


def _observe(t: pd.DataFrame, design: Design) -> pd.DataFrame:
    """The per-trial measurements: alignments of the observed priorities, the model-native
    sensitivity (a second noisy observation of the latent alignment), artifact signatures."""
    if design.legacy_columns:
        return t.drop(columns=["artifact_weight", "_z", "_rn"])
    w = t["artifact_weight"]
    t["shortcut_alignment_probe"] = [weighted_alignment(p, v) for p, v in zip(t["psd_probe"], w)]
    t["shortcut_alignment_pretrained"] = t["shortcut_alignment_probe"]
    t["shortcut_alignment_finetuned"] = [weighted_alignment(p, v) for p, v in zip(t["psd_finetuned"], w)]
    sens = np.exp(0.3 * t["_z"] + 0.3 * np.stack(t["_rn"])[:, 0])
    t["artifact_sensitivity_probe"], t["artifact_sensitivity_rel_probe"] = sens * 1e-3, sens / (1 + sens)
    fsens = sens * np.exp(0.3 * np.stack(t["_rn"])[:, 1])
    t["artifact_sensitivity_finetuned"], t["artifact_sensitivity_rel_finetuned"] = fsens * 1e-3, fsens / (1 + fsens)
    t["psd_artifact_probe"] = t["psd_artifact"]  # P_art from w = P_art/(P_art+P_img)
    t["psd_image_probe"] = [TARGET_PSD] * len(t)
    return t.drop(columns=["_z", "_rn"])


def simulate(design: Design = QUICK, effects: Effects = Effects(), seed: int = 0) -> pd.DataFrame:
    """One simulated experiment: a trials table like ``collect(...).trials`` (finished trials)."""
    rows, backbones, shortcuts = [], design.backbones(), _shortcuts(design)
    reliance = {b: _reliance(design, effects, seed, b) for b in backbones}
    psds = {b: _unit(s * np.exp(effects.probe_noise * _rng(seed, "probe", b).standard_normal(BINS)))
            for b, s in reliance.items()}
    z = _alignment_z(design, reliance, shortcuts)
    for b in backbones:
        rb = _rng(seed, "model effects", b)
        block = effects.seed_block_sd * _rng(seed, "seed block", b[2]).standard_normal()
        base_model = {"iid": 0.8 + effects.auc_model_sd * rb.standard_normal(),
                      "drop": effects.drop_sd * rb.standard_normal() + block}
        for fold in design.folds:
            rf = _rng(seed, "fold", b, fold)
            base = {**base_model, "iid": base_model["iid"] + effects.noise_sd * rf.standard_normal()}
            rows += _net_rows(design, effects, seed, b, psds[b], fold, base, shortcuts, z)
    t = pd.DataFrame(rows)
    t["iid_auc"], t["ood_auc"] = _pin(t["iid_auc"]), _pin(t["ood_auc"])
    return _columns(t, design)


def _columns(t: pd.DataFrame, design: Design) -> pd.DataFrame:
    edited = t["edit_strength"] != 0
    key = [f"key-{s}-{e:g}-{r}" for s, e, r in zip(t["source"], t["edit_strength"], t["seed"])]
    t = t.assign(kind="finetune", status="TERMINATED", trial_id=[f"sim{i:05d}" for i in range(len(t))],
                 source_weights=None, source_label=t["source"], edit=np.where(edited, "band_gain", "none"),
                 edit_omega=np.where(edited, 0.5, None), finetune_seed=None, target="ct_lesion", data_seed=0, n_folds=5,
                 model="resnet10t", size=64, channels=1, psd_images=128, pretrain_key=key)
    if not design.legacy_columns:  # seeds drawn from the backbone's identity (old: the pretraining seed)
        drawn = [zlib.crc32(k.encode()) % 2**31 for k in key]
        t["finetune_seed_used"] = t["seed"] if design.old_seeding else drawn
        if not design.old_seeding:
            t["artifact_seed_used"] = [(s + 1) % 2**31 for s in drawn]
    band = t["artifact"] == "band"
    t["artifact_resolved/omega"] = t["artifact_omega"].where(band, None)
    t["artifact_resolved/amplitude"] = t["artifact_amplitude"].where(band, None)
    t["artifact_resolved/bandwidth"] = np.where(band, design.bandwidth, None)
    t["psd_pretrained"], t["psd_pretrained_on"] = t["psd_probe"], "source"
    t["psd_artifact"] = [_unit(v * TARGET_PSD / np.maximum(1 - v, 1e-9) + 1e-12) for v in t["artifact_weight"]]
    t = _observe(t, design)
    t.attrs["config_columns"] = ["source", "source_weights", "edit", "edit_strength", "edit_omega", "seed", "target",
                                 "artifact", "artifact_omega", "artifact_amplitude", "degradation", "fold",
                                 "finetune_seed", "data_seed", "n_folds", "model", "size", "channels", "psd_images"]
    return t
