"""The findings F1–F5 of docs/SCIENCE.md as statistical checks, one registered function each.

``@finding("F4", claim=..., unit=...)`` registers a check in :data:`FINDINGS`; :func:`check_all`
runs them in order. A check returns a :class:`Finding` with a verdict — ``"supported"``, ``"not
supported"`` or ``"not testable in this experiment: needs …"`` — the statistic, a p-value and/or
a confidence interval, the unit of replication with the number of distinct units, the priority
it compared, and a sentence saying which trials and keys it used. docs/FINDINGS.md describes
each test, why it is built that way, and its false-positive rate and power under simulation.

Conventions:

* Only finished fine-tuning trials (``status == "TERMINATED"``) are used.
* The unit of replication is what was trained independently (:mod:`analysis.units`): a
  pretrained model, or a (model, fold) fine-tune; d = 0 twins (the same network scored on
  different artifacts) are one model. Every test runs on one value per unit.
* Priorities of pretrained models are compared on the shared probe set (``psd_probe``) where the
  trials report it; the own-source priority (``psd_pretrained``) is the fallback for older runs.
* Distances between priorities are total-variation distances between unit-sum spectra.
* AUCs pinned at exactly 0 or 1 are ties: kept, ranked with midranks, and flagged in the notes.
* α = 0.05; with several comparisons, Holm's correction.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from spectral_ray.robustness import robustness
from spectral_ray.spectrum import band_mass, summarize

from .aggregate import RESOLVED, SOURCE, finetune_trials, group_keys, pinned
from .stats import group_permutation, holm, joint_permutation_spearman, sign_flip, tv, varies, welch_greater
from .units import (BACKBONE_INPUTS, PRIORITY_TEXT, distinct_models, finished_finetunes, is_vec, present,
                    pretrained_models, priority_column, probe_sets)

__all__ = ["Finding", "FINDINGS", "finding", "check_all", "check_f1", "check_f2", "check_f3", "check_f4", "check_f5",
           "SUPPORTED", "NOT_SUPPORTED", "not_testable", "findings_table", "f4_table", "f4_strata_keys", "f4_per_model",
           "artifact_alignment",
           "pretrained_models"]

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
ALPHA = 0.05
IID_MARGIN = 0.05  # F3: I.I.D. "holds" if its fall from lowest to highest degradation is < this (95 % CI)
FEW_MODELS = 6     # F4 with fewer pretrained models than this is underpowered (docs/FINDINGS.md)
MIN_SIGN_FLIP = 5  # units a one-sided sign-flip test needs to reach p < 0.05 (1/2^5 = 0.031)
PRETRAINED_MODEL = "pretrained model"
FINETUNE_UNIT = "(model, fold) fine-tune"


def not_testable(needs: str) -> str:
    return f"not testable in this experiment: needs {needs}"


@dataclass
class Finding:
    id: str
    claim: str
    verdict: str
    unit: str = ""                # what one unit of replication is
    n_units: str = ""             # the distinct units tested, in words ("4 pretrained models")
    priority: str = ""            # which priority the comparison used
    statistic: str = ""           # what was measured, in words with its value
    value: float | None = None    # the headline statistic
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    ci_of: str = ""               # what the 95 % CI is an interval of
    n: int | None = None          # number of distinct units tested
    test: str = ""
    data: str = ""                # which trials/keys were used
    notes: list[str] = field(default_factory=list)
    details: pd.DataFrame | None = None

    @property
    def testable(self) -> bool:
        return not self.verdict.startswith("not testable")

    def to_dict(self) -> dict:
        return {
            "id": self.id, "claim": self.claim, "verdict": self.verdict, "unit": self.unit, "n": self.n,
            "n_units": self.n_units, "priority": self.priority, "statistic": self.statistic, "value": self.value,
            "p_value": self.p_value, "ci_low": self.ci[0] if self.ci else None,
            "ci_high": self.ci[1] if self.ci else None, "ci_of": self.ci_of, "test": self.test, "data": self.data,
            "notes": " ".join(self.notes),
        }


@dataclass(frozen=True)
class Check:
    id: str
    claim: str
    unit: str
    run: Callable[..., Finding]


FINDINGS: dict[str, Check] = {}


def finding(fid: str, *, claim: str, unit: str):
    """Register ``fn(trials, *, rng=None) -> Finding`` as the check of finding ``fid``."""
    def register(fn):
        FINDINGS[fid] = Check(fid, claim, unit, fn)
        return fn
    return register


def _start(fid: str, test: str) -> Finding:
    spec = FINDINGS[fid]
    return Finding(fid, spec.claim, "", unit=spec.unit, test=test)


def _fmt(x, digits=3) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}g}"


def _plural(n: int, what: str) -> str:
    plural = {"stratum": "strata"}.get(what, what + "s")
    return f"{n} {what if n == 1 else plural}"


def _pin_note(values: pd.Series, how: str) -> list[str]:
    n = int(pinned(values.dropna()).sum())
    return [f"{_plural(n, 'O.O.D. AUC')} pinned at exactly 0/1 (ties) kept: {how}."] if n else []


# ----------------------------------------------------------------------------- F1


def _shared_probe_sets(models: pd.DataFrame) -> set:
    """The probe sets every model in ``models`` (rows of :func:`pretrained_models`) was measured
    on; when none is common to all, the one with the most models."""
    shared = set.intersection(*models.groupby("backbone")["probe_set"].apply(set))
    return shared or {models["probe_set"].value_counts().idxmax()}


def _f1_models(un: pd.DataFrame, a: str, b: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The probe sets that every model of sources a and b was measured on, and per model its
    priorities on them, concatenated (unit-sum each, so TV of the concatenation = the mean TV over
    probe sets). A model is one unit whatever the number of probe sets: relabelling the
    concatenations relabels each model on every probe set at once."""
    g = un[un[SOURCE].isin([a, b])]
    shared = sorted(_shared_probe_sets(g))
    g = g[g["probe_set"].isin(shared)]
    g = g[g.groupby("backbone")["probe_set"].transform("nunique") == len(shared)]
    vecs = {m: np.concatenate([r["psd"] for _, r in rows.sort_values("probe_set").iterrows()])
            for m, rows in g.groupby("backbone")}
    label = g.drop_duplicates("backbone").set_index("backbone")[SOURCE]
    return shared, [vecs[m] for m in vecs if label[m] == a], [vecs[m] for m in vecs if label[m] == b]


def _f1_pairs(un: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    counts = un.drop_duplicates("backbone").groupby(SOURCE).size()
    for a, b in itertools.combinations(sorted(counts[counts >= 2].index), 2):
        shared, va, vb = _f1_models(un, a, b)
        if len(va) < 2 or len(vb) < 2:
            continue
        obs, p, p_min, n_null = group_permutation(va, vb, rng)
        within = [tv(x, y) for grp in (va, vb) for x, y in itertools.combinations(grp, 2)]
        spread = float(np.mean(within)) if within else np.nan
        k = len(shared)  # drop DC on each probe set's part of the concatenation
        nodc = [v.reshape(k, -1)[:, 1:].ravel() for v in (np.mean(va, 0), np.mean(vb, 0))]
        rows.append({"pair": f"{a} vs {b}", "probe_sets": k, "tv": obs, "p": p, "p_min": p_min,
                     "n_relabellings": n_null, "seed_spread_tv": spread,
                     "ratio_to_spread": obs / spread if spread > 0 else np.inf,
                     "tv_without_dc": tv(*nodc), "n": len(va) + len(vb)})
    det = pd.DataFrame(rows)
    if len(det):
        det["p_holm"] = holm(det["p"].tolist())
    return det


@finding("F1", claim="Models pretrained on different sources have different learning priorities", unit=PRETRAINED_MODEL)
def check_f1(trials: pd.DataFrame, *, rng: np.random.Generator | None = None) -> Finding:
    rng = rng or np.random.default_rng(0)
    f = _start("F1", "permutation test of source labels over unedited pretrained models (exhaustive up to "
                     "20 000 relabellings), TV distance of mean priorities (averaged over probe sets, a model "
                     "relabelled on all of them at once); Holm over source pairs")
    models = pretrained_models(trials)
    if models.empty:
        f.verdict = not_testable("pretrained priorities (`psd_probe` or `psd_pretrained`) of at least two sources")
        return f
    f.priority = PRIORITY_TEXT[models["priority"].iloc[0]]
    un = models[~models["edited"]]
    counts = un.drop_duplicates("backbone").groupby(SOURCE).size()
    have = ", ".join(f"{s} {n}" for s, n in counts.items())
    n_models = un["backbone"].nunique()
    f.data = f"{_plural(n_models, 'unedited pretrained model')} ({have})"
    f.n, f.n_units = n_models, _plural(n_models, "pretrained model")
    det = _f1_pairs(un, rng)
    if det.empty:
        f.verdict = not_testable(f"≥ 2 unedited pretrained models (seeds) from each of two sources (have {have})")
        means = {s: np.mean(np.stack(g["psd"].to_list()), 0) for s, g in un.groupby(SOURCE)}
        if len(means) >= 2:  # still say how far apart they are, without a null
            (a, pa), (b, pb) = list(means.items())[:2]
            f.value = tv(pa, pb)
            f.statistic = (f"TV distance between mean pretrained priorities ({a} vs {b}) = {f.value:.3f} "
                           f"(descriptive: no seed-to-seed spread to compare with)")
        return f
    f.details = det
    weakest = det.loc[det["p_holm"].idxmax()]
    used = un[un[SOURCE].isin(set(itertools.chain(*(p.split(" vs ") for p in det["pair"]))))]
    f.value, f.p_value, f.n = float(weakest["tv"]), float(weakest["p_holm"]), int(used["backbone"].nunique())
    f.n_units = _plural(f.n, "pretrained model")
    f.statistic = (f"TV distance between mean pretrained priorities ({weakest['pair']}) = {weakest['tv']:.3f}, "
                   f"{weakest['ratio_to_spread']:.1f}× the seed-to-seed spread ({weakest['seed_spread_tv']:.3f}); "
                   f"without DC {weakest['tv_without_dc']:.3f}")
    if int(weakest["probe_sets"]) > 1:
        f.notes.append(f"Each model's priorities on {int(weakest['probe_sets'])} probe sets (one per target) are "
                       "one unit: relabelled together, TV averaged over the probe sets.")
    if len(det) > 1:
        f.notes.append(f"{len(det)} source pairs, Holm-corrected; the weakest pair is shown.")
    if (det["p_min"] * len(det) > ALPHA).any():
        need = next(k for k in range(2, 50) if 2 / math.comb(2 * k, k) < ALPHA / len(det))
        f.verdict = not_testable(f"≥ {need} pretrained seeds per source (with {int(det['n'].min())} models the "
                                 f"permutation test cannot reach p < {ALPHA}: smallest p = {det['p_min'].max():.3f})")
        return f
    f.verdict = SUPPORTED if (det["p_holm"] < ALPHA).all() else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F2


def _clean_finetunes(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """Distinct unedited fine-tuned models at the lowest degradation with ``psd_finetuned``,
    each with the probe set its backbone's ``column`` priority was measured on."""
    ft = finished_finetunes(trials)
    if "psd_finetuned" not in ft:
        return ft.iloc[:0]
    ft = ft[ft["psd_finetuned"].map(is_vec) & ~ft["edited"]]
    if "degradation" in ft and len(ft):
        ft = ft[ft["degradation"] == ft["degradation"].min()]
    return distinct_models(ft).assign(probe_set=probe_sets(ft, column))


def _f2_margins(ft: pd.DataFrame, models: pd.DataFrame, a: str, b: str, by_model: bool) -> pd.DataFrame:
    """y = TV(fine-tuned, b's mean) − TV(fine-tuned, a's mean) per unit; a model's own priority is
    left out of its source's mean when the source has others (else its fine-tunes would be
    compared with themselves)."""
    rows = []
    for _, t in ft[ft[SOURCE].isin([a, b])].iterrows():
        ref = {}
        for s in (a, b):
            pool = models[(models[SOURCE] == s) & ((models["backbone"] != t["backbone"]) | ~by_model)]
            ref[s] = np.mean(np.stack(pool["psd"].to_list()), 0)
        rows.append({"backbone": t["backbone"], SOURCE: t[SOURCE], "fold": t.get("fold"),
                     "y": tv(t["psd_finetuned"], ref[b]) - tv(t["psd_finetuned"], ref[a])})
    det = pd.DataFrame(rows)
    return det.groupby(["backbone", SOURCE], as_index=False)["y"].mean() if by_model else det


def _f2_pairs(ft: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for probe, g in models.groupby("probe_set", sort=True):
        counts = g.groupby(SOURCE).size()
        sub = ft[ft["probe_set"] == probe]
        for a, b in itertools.combinations(sorted(counts.index), 2):
            by_model = bool(counts[a] >= 2 and counts[b] >= 2)
            det = _f2_margins(sub, g, a, b, by_model)
            if det.empty:
                continue
            ya, yb = det.loc[det[SOURCE] == a, "y"], det.loc[det[SOURCE] == b, "y"]
            diff, p, ci = welch_greater(ya, yb)
            rows.append({"pair": f"{a} vs {b}", "probe_set": probe, "unit": PRETRAINED_MODEL if by_model else FINETUNE_UNIT,
                         "margin": diff / 2, f"margin_{a}": ya.mean(), f"margin_{b}": -yb.mean(), "p": p,
                         "ci_low": ci[0] / 2 if ci else np.nan, "ci_high": ci[1] / 2 if ci else np.nan,
                         "n_a": len(ya), "n_b": len(yb), "closer_to_own": int((ya > 0).sum() + (yb < 0).sum())})
    det = pd.DataFrame(rows)
    if len(det) and det["p"].notna().any():
        ok = det["p"].notna()
        det.loc[ok, "p_holm"] = holm(det.loc[ok, "p"].tolist())
    return det


@finding("F2", claim="The difference persists through fine-tuning (fine-tuned priority closer to its own source's "
                     "pretrained priority)", unit=f"{FINETUNE_UNIT}; a {PRETRAINED_MODEL} when sources have ≥ 2")
def check_f2(trials: pd.DataFrame, *, rng: np.random.Generator | None = None) -> Finding:
    f = _start("F2", "one-sided Welch test, per source pair a/b, that y = TV(fine-tuned, b) − TV(fine-tuned, a) is "
                     "larger for a's fine-tunes than for b's (margin = half the difference: how much closer to their "
                     "own source the fine-tunes are, balanced over both sources); Holm over pairs")
    column = priority_column(trials)
    models = pretrained_models(trials, column)
    models = models[~models["edited"]] if not models.empty else models
    ft = _clean_finetunes(trials, column)
    if models.empty or models[SOURCE].nunique() < 2 or ft.empty:
        f.verdict = not_testable("pretrained priorities of ≥ 2 sources and finished unedited fine-tuning trials "
                                 "with `psd_finetuned`")
        return f
    f.priority = PRIORITY_TEXT[column] + " vs `psd_finetuned` (the fine-tuned network on the same images)"
    det = _f2_pairs(ft, models)
    if det.empty or det["p"].isna().all():
        f.verdict = not_testable(f"≥ 2 distinct clean fine-tunes from each of two sources (have "
                                 f"{', '.join(f'{s} {n}' for s, n in ft.groupby(SOURCE).size().items())})")
        return f
    det = det[det["p"].notna()]
    f.details = det
    weakest = det.loc[det["p_holm"].idxmax()]
    f.value, f.p_value = float(weakest["margin"]), float(weakest["p_holm"])
    f.ci, f.ci_of = (float(weakest["ci_low"]), float(weakest["ci_high"])), "margin"
    f.unit = weakest["unit"]
    f.n = int(weakest["n_a"] + weakest["n_b"])
    f.n_units = _plural(f.n, "pretrained model" if f.unit == PRETRAINED_MODEL else "distinct clean fine-tune")
    level = f" at degradation {ft['degradation'].min():g}" if "degradation" in ft else ""
    f.statistic = (f"{weakest['pair']}: fine-tunes are {weakest['margin']:+.3f} TV closer to their own source's "
                   f"pretrained priority than to the other's; {int(weakest['closer_to_own'])}/{f.n} closer to their own")
    f.data = (f"`psd_finetuned` of {_plural(len(ft), 'distinct unedited fine-tuned model')}{level} "
              f"(d = 0 twins merged) from {_plural(models['backbone'].nunique(), 'pretrained model')}")
    if f.unit == FINETUNE_UNIT:
        f.notes.append("One pretrained model per source: the units are its fine-tunes, so the finding is about "
                       "these backbones, not about their sources in general.")
    f.verdict = SUPPORTED if ((det["p_holm"] < ALPHA) & (det["margin"] > 0)).all() else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F3


def _f3_units(ft: pd.DataFrame) -> pd.DataFrame:
    """Per (model, fold) unit: mean over its shortcuts of Spearman ρ(degradation, O.O.D. AUC)
    (midranks: Pearson correlation of within-shortcut average ranks) and of the I.I.D. change
    from the lowest to the highest degradation."""
    keys = ["unit", "shortcut"]
    g = ft.assign(iid_auc=ft["iid_auc"] if "iid_auc" in ft else np.nan)
    by = g.groupby(keys)
    cd = by["degradation"].rank() - by["degradation"].transform("size").add(1) / 2  # centred midranks
    co = by["ood_auc"].rank() - by["ood_auc"].transform("size").add(1) / 2
    parts = pd.DataFrame({"xy": cd * co, "xx": cd**2, "yy": co**2}).groupby([g[k] for k in keys]).sum()
    rho = (parts["xy"] / np.sqrt(parts["xx"] * parts["yy"])).where((parts["xx"] > 0) & (parts["yy"] > 0))
    lo, hi = by["degradation"].transform("min"), by["degradation"].transform("max")
    iid_lo = g["iid_auc"].where(g["degradation"] == lo).groupby([g[k] for k in keys]).mean()
    iid_hi = g["iid_auc"].where((g["degradation"] == hi) & (hi > lo)).groupby([g[k] for k in keys]).mean()
    per = pd.DataFrame({"rho_ood": rho, "iid_change": iid_hi - iid_lo}).dropna(subset=["rho_ood"]).reset_index()
    first = g.drop_duplicates("unit").set_index("unit")
    units = per.groupby("unit", sort=True).agg(rho_ood=("rho_ood", "mean"), iid_change=("iid_change", "mean"),
                                               n_shortcuts=("shortcut", "size")).reset_index()
    for col in ("backbone", SOURCE, "fold"):
        units[col] = units["unit"].map(first[col]) if col in first else None
    return units


def _iid_holds(units: pd.DataFrame, margin: float) -> tuple[bool | None, tuple[float, float] | None, str]:
    x = units["iid_change"].dropna()
    if len(x) < 2:
        return None, None, "I.I.D. AUC not checked (needs `iid_auc` at the lowest and highest degradation in ≥ 2 units)"
    half = stats.t.ppf(0.975, len(x) - 1) * stats.sem(x) if x.std() > 0 else 0.0
    ci = (float(x.mean() - half), float(x.mean() + half))
    ok = ci[0] > -margin
    return ok, ci, (f"I.I.D. AUC change lowest→highest degradation {x.mean():+.3f} (95 % CI {ci[0]:+.3f}…{ci[1]:+.3f}, "
                    f"over units) — {'holds' if ok else 'does not hold'}")


@finding("F3", claim="O.O.D. AUC falls as degradation rises while I.I.D. AUC holds",
         unit=f"{FINETUNE_UNIT}; a {PRETRAINED_MODEL} when there are ≥ {MIN_SIGN_FLIP}")
def check_f3(trials: pd.DataFrame, *, rng: np.random.Generator | None = None, iid_margin: float = IID_MARGIN) -> Finding:
    rng = rng or np.random.default_rng(0)
    f = _start("F3", "Spearman ρ(degradation, O.O.D. AUC) with midranks per shortcut of each (model, fold) unit, "
                     "averaged per unit (per pretrained model when there are enough); one-sided sign-flip test over "
                     "units (exact up to 14); I.I.D. change lowest→highest degradation per unit with a 95 % t CI, "
                     f"'holds' if the CI is above −{iid_margin}")
    ft = finished_finetunes(trials)
    if "ood_auc" not in ft or "degradation" not in ft:
        f.verdict = not_testable("finished fine-tuning trials reporting `ood_auc` with a `degradation` config key")
        return f
    ft = ft.dropna(subset=["ood_auc", "degradation"])
    units = _f3_units(ft)
    if units["backbone"].nunique() >= MIN_SIGN_FLIP if len(units) else False:  # clusters: the pretrained models
        f.unit = PRETRAINED_MODEL
        units = units.groupby(["backbone", SOURCE], as_index=False).agg(
            rho_ood=("rho_ood", "mean"), iid_change=("iid_change", "mean"), n_units=("unit", "size"))
    n_models = distinct_models(ft)["model"].nunique()
    f.data = (f"`ood_auc`, `iid_auc` of {len(ft)} finished fine-tuning trials ({n_models} distinct models, "
              f"d = 0 twins merged) at degradation {', '.join(f'{x:g}' for x in sorted(ft['degradation'].unique()))}")
    f.notes += _pin_note(ft["ood_auc"], "ranked with midranks")
    if len(units) < 2:
        f.verdict = not_testable(f"≥ {MIN_SIGN_FLIP} (model, fold) fine-tune units with trials at ≥ 2 degradation "
                                 f"levels (have {len(units)})")
        return f
    rho, p, p_min = sign_flip(units["rho_ood"], rng, "less")
    f.details, f.value, f.p_value = units, rho, p
    what = "pretrained model" if f.unit == PRETRAINED_MODEL else "(model, fold) fine-tune"
    f.n, f.n_units = len(units), f"{_plural(len(units), what)} ({_plural(units[SOURCE].nunique(), 'source')})"
    iid_ok, f.ci, iid_text = _iid_holds(units, iid_margin)
    f.ci_of = "I.I.D. change" if f.ci else ""
    f.statistic = f"mean over units of Spearman ρ(degradation, O.O.D. AUC) = {rho:.3f}; {iid_text}"
    if f.unit != PRETRAINED_MODEL:
        f.notes.append(f"Fewer than {MIN_SIGN_FLIP} pretrained models: the units are their fine-tunes, so the finding "
                       "is about these backbones (a backbone-level random slope is not part of the null).")
    if p_min > ALPHA:
        f.verdict = not_testable(f"≥ {MIN_SIGN_FLIP} units (with {len(units)} the sign-flip test cannot "
                                 f"reach p < {ALPHA}: smallest p = {p_min:.3f})")
        return f
    ood_falls = rho < 0 and p < ALPHA
    if ood_falls and iid_ok is False:
        f.notes.append("O.O.D. AUC falls, but I.I.D. AUC falls too.")
    f.verdict = SUPPORTED if (ood_falls and iid_ok is not False) else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F4


def artifact_alignment(t: pd.Series, psd) -> tuple[float, str]:
    """Alignment of a priority with the trial's artifact, integrated over the artifact's band.

    With the artifact's recorded ω and bandwidth (``artifact_resolved/omega``, ``/bandwidth``):
    unit-sum priority mass within ±max(bandwidth/2, 1 bin) of ω (``band_mass``). Otherwise the
    mass where the artifact's signature ``psd_artifact`` reaches ≥ 10 % of its peak, widened by
    one bin either side. Returns (value, method); (NaN, "") when neither was recorded."""
    if not is_vec(psd):
        return np.nan, ""
    omega, bw = t.get(f"{RESOLVED}omega"), t.get(f"{RESOLVED}bandwidth")
    number = lambda v: isinstance(v, (int, float, np.floating)) and np.isfinite(v)  # noqa: E731
    if number(omega) and number(bw) and 0 < omega <= 1:
        half = max(float(bw) / 2, 1.0 / (len(psd) - 1))
        return band_mass(psd, float(omega), 2 * half), f"mass within ±{half:.3g} of ω_a"
    a = t.get("psd_artifact")
    if is_vec(a) and len(a) == len(psd):
        band = a >= 0.1 * a.max()
        k = np.arange(len(a))
        band = band | (np.roll(band, 1) & (k > 0)) | (np.roll(band, -1) & (k < len(a) - 1))
        p = np.asarray(psd, float) / np.sum(psd)
        return float(p[band].sum()), "mass in the artifact signature's band"
    return np.nan, ""


def f4_strata_keys(trials: pd.DataFrame) -> list[str]:
    """F4's strata: every condition but the backbone's — target, artifact and all its parameters,
    degradation, … (the columns of :func:`f4_table` that name a row's ``stratum``)."""
    backbone = set(present(trials, BACKBONE_INPUTS)) | {"edit", "edit_strength"}
    return [k for k in group_keys(trials) if k not in backbone and not k.startswith("edit_")]


def _clean_partners(ft: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    clean = ft[(ft["degradation"] == 0) & ft["ood_auc"].notna()]
    return {(r["unit"], r["shortcut"]): r for _, r in clean.iterrows()}


def f4_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per finished fine-tuning trial at degradation > 0 with its O.O.D. drop and alignments.

    ``ood_drop`` = O.O.D. AUC of the clean (degradation 0) trial of the same unit and shortcut
    (the same network family scored on the same artifact) minus this trial's (falls back to
    ``iid_auc − ood_auc`` without a clean partner; ``drop_kind`` says which). ``align_pretrained``
    uses the backbone's priority (``psd_probe``, else ``psd_pretrained``); ``align_clean_finetuned``
    the clean partner's ``psd_finetuned``. ``backbone`` and ``stratum`` identify the model and the
    condition."""
    ft = finished_finetunes(trials)
    if "ood_auc" not in ft or "degradation" not in ft:
        return pd.DataFrame()
    column, strata = priority_column(trials), f4_strata_keys(trials)
    partner = _clean_partners(ft)
    rows = []
    for _, t in ft[(ft["degradation"] > 0) & ft["ood_auc"].notna()].iterrows():
        c = partner.get((t["unit"], t["shortcut"]))
        if c is not None:
            drop, kind, pin_ref = c["ood_auc"] - t["ood_auc"], "vs clean", bool(pinned([c["ood_auc"]])[0])
        elif "iid_auc" in t and np.isfinite(t["iid_auc"]):
            drop, kind, pin_ref = t["iid_auc"] - t["ood_auc"], "iid − ood", bool(pinned([t["iid_auc"]])[0])
        else:
            continue
        a_pre, m_pre = artifact_alignment(t, t.get(column))
        a_ft, m_ft = artifact_alignment(t, c.get("psd_finetuned")) if c is not None else (np.nan, "")
        rows.append({"trial_id": t.get("trial_id"), "backbone": t["backbone"],
                     "stratum": " · ".join(f"{k}={t[k]}" for k in strata), SOURCE: t[SOURCE],
                     "edit_label": t["edit_label"], **{k: t[k] for k in strata}, "fold": t.get("fold"),
                     "ood_auc": t["ood_auc"], "ood_drop": drop, "drop_kind": kind,
                     "pinned": bool(pinned([t["ood_auc"]])[0]) or pin_ref, "align_pretrained": a_pre,
                     "align_clean_finetuned": a_ft, "align_method": m_pre or m_ft, "priority": column})
    return pd.DataFrame(rows)


def _complete(x: pd.DataFrame, y: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop the model or stratum with the most missing cells until the (model × stratum) tables
    are complete (the joint relabelling needs every model in every stratum it uses)."""
    while len(x) and len(x.columns):
        missing = x.isna() | y.isna()
        if not missing.to_numpy().any():
            break
        by_row, by_col = missing.sum(axis=1), missing.sum(axis=0)
        if by_row.max() / len(x.columns) >= by_col.max() / len(x):
            x, y = x.drop(index=by_row.idxmax()), y.drop(index=by_row.idxmax())
        else:
            x, y = x.drop(columns=by_col.idxmax()), y.drop(columns=by_col.idxmax())
    return x, y


def f4_per_model(tab: pd.DataFrame, align: str = "align_pretrained") -> pd.DataFrame:
    """F4's units: the rows of :func:`f4_table` with ``align`` and ``ood_drop``, folds averaged per
    (pretrained model, stratum). Index (``backbone``, ``stratum``), columns ``align``, ``ood_drop``.
    F4's test and ``spectral-ray risk``'s fit (analysis/risk.py) both read this table."""
    return tab.dropna(subset=[align, "ood_drop"]).groupby(["backbone", "stratum"])[[align, "ood_drop"]].mean()


def _f4_test(tab: pd.DataFrame, align: str, rng: np.random.Generator) -> dict:
    """Folds averaged per (model, stratum) (:func:`f4_per_model`), a complete (model × stratum)
    table, and the joint permutation of model labels (:func:`analysis.stats.joint_permutation_spearman`)."""
    per = f4_per_model(tab, align)
    if per.empty:
        return {"rho": np.nan, "p": np.nan, "p_min": np.nan, "n_models": 0, "n_strata": 0, "n_left_out": 0}
    x_all = per[align].unstack("stratum")
    x, y = _complete(x_all, per["ood_drop"].unstack("stratum"))
    rho, p, p_min, _ = joint_permutation_spearman(x.to_numpy(), y.to_numpy(), rng)
    usable = int((varies(x.to_numpy()) & varies(y.to_numpy())).sum()) if len(x) >= 3 else 0
    return {"rho": rho, "p": p, "p_min": p_min, "n_models": len(x), "n_strata": usable,
            "n_left_out": int(x_all.size - x.size)}


@finding("F4", claim="Alignment of priority with the artifact goes with larger O.O.D. AUC loss", unit=PRETRAINED_MODEL)
def check_f4(trials: pd.DataFrame, *, rng: np.random.Generator | None = None) -> Finding:
    rng = rng or np.random.default_rng(0)
    f = _start("F4", "folds averaged per (pretrained model, stratum); mean within-stratum Spearman ρ(alignment, "
                     "O.O.D. drop) with midranks over strata of (target, artifact and every recorded artifact "
                     "parameter, degradation, other conditions); one-sided p from relabelling the models jointly "
                     "in every stratum (exhaustive up to 20 000 relabellings)")
    tab = f4_table(trials)
    if tab.empty:
        f.verdict = not_testable("finished fine-tuning trials at degradation > 0 with `ood_auc` (and clean partners)")
        return f
    f.details, f.priority = tab, PRIORITY_TEXT[tab["priority"].iloc[0]]
    res = {a: _f4_test(tab, a, rng) for a in ("align_pretrained", "align_clean_finetuned")}
    primary = "align_pretrained" if res["align_pretrained"]["n_strata"] else "align_clean_finetuned"
    r = res[primary]
    f.notes += _pin_note(tab["ood_auc"], "they (or their clean partners) enter the fold means, ranked with midranks")
    if not r["n_strata"]:
        f.verdict = not_testable("≥ 3 pretrained models whose alignment with the artifact differs within a stratum, "
                                 "with pretrained or clean-fine-tuned priorities and the artifact's ω or signature")
        return f
    names = {"align_pretrained": "pretrained priority", "align_clean_finetuned": "clean-fine-tuned priority"}
    secondary = "align_clean_finetuned" if primary == "align_pretrained" else "align_pretrained"
    other = res[secondary]
    f.value, f.p_value, f.n = r["rho"], r["p"], r["n_models"]
    f.n_units = f"{_plural(r['n_models'], 'pretrained model')} × {_plural(r['n_strata'], 'stratum')}"
    f.statistic = (f"mean within-stratum Spearman ρ(alignment of the {names[primary]}, O.O.D. drop) = {r['rho']:.3f} "
                   f"(the verdict's); with the {names[secondary]}: "
                   f"ρ = {_fmt(other['rho'])}, p = {_fmt(other['p'])}")
    f.data = (f"{len(tab)} finished trials at degradation > 0 ({tab['backbone'].nunique()} models); alignment = "
              f"{tab['align_method'].iloc[0] or 'n/a'}; O.O.D. drop = {', '.join(sorted(tab['drop_kind'].unique()))}")
    idle = tab["stratum"].nunique() - r["n_strata"]
    if idle > 0:
        f.notes.append(f"{_plural(idle, 'stratum')} left out: there every model has the same alignment (to float "
                       "rounding) or the same drop, e.g. a broadband artifact whose signature covers every "
                       "band (alignment 1): no ranking to test.")
    if r["n_left_out"]:
        f.notes.append(f"{r['n_left_out']} (model, stratum) cells left out to make the table complete (the joint "
                       "relabelling needs every model in every stratum; missing trials).")
    if r["p_min"] > ALPHA:
        f.verdict = not_testable(f"≥ 4 pretrained models (with {r['n_models']} the permutation test cannot reach "
                                 f"p < {ALPHA}: smallest p = {r['p_min']:.3f})")
        return f
    if r["n_models"] < FEW_MODELS:
        f.notes.append(f"Underpowered: with {r['n_models']} pretrained models only {math.factorial(r['n_models'])} "
                       "relabellings exist, and a real effect is often missed (docs/FINDINGS.md gives the measured power).")
    f.verdict = SUPPORTED if (r["rho"] > 0 and r["p"] < ALPHA) else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F5


def _arm(ft: pd.DataFrame, source: str, label: str) -> pd.DataFrame:
    return ft[(ft[SOURCE] == source) & (ft["edit_label"] == label)]


def _compare(edited: pd.Series, unedited: pd.Series, pairs: bool) -> dict:
    """Two-sided test of edited vs unedited per-unit values: Welch over pretrained models, or a
    paired t-test over matched fine-tune units (``pairs``: both indexed by the pairing key)."""
    if pairs:
        common = sorted(set(edited.index) & set(unedited.index), key=str)
        if len(common) < 3:
            return {"diff": np.nan, "p": np.nan, "n": len(common)}
        a, b = edited.loc[common].to_numpy(float), unedited.loc[common].to_numpy(float)
        return {"diff": float((a - b).mean()), "p": float(stats.ttest_rel(a, b).pvalue), "n": len(common),
                "edited": a.mean(), "unedited": b.mean()}
    if len(edited) < 2 or len(unedited) < 2:
        return {"diff": np.nan, "p": np.nan, "n": len(edited) + len(unedited)}
    return {"diff": float(edited.mean() - unedited.mean()), "n": len(edited) + len(unedited),
            "p": float(stats.ttest_ind(edited, unedited, equal_var=False).pvalue),
            "edited": edited.mean(), "unedited": unedited.mean()}


def _unit_robustness(ft: pd.DataFrame, levels: list[float]) -> pd.DataFrame:
    """Per (model, fold) unit: mean over its shortcuts of :func:`spectral_ray.robustness.robustness`
    on the experiment's degradation grid (units missing a level are left out)."""
    rows = []
    for unit, g in ft.dropna(subset=["ood_auc"]).groupby("unit"):
        per = [robustness(s["ood_auc"], s["degradation"], levels) for _, s in g.groupby("shortcut")]
        if per and np.isfinite(per).all():
            rows.append({"unit": unit, "backbone": g["backbone"].iloc[0], "finetune": g["finetune"].iloc[0],
                         "robustness": float(np.mean(per))})
    return pd.DataFrame(rows, columns=["unit", "backbone", "finetune", "robustness"])


def _model_centroids(em: pd.DataFrame, bm: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """One centroid per pretrained model of each arm (a model is one unit, however many probe
    sets it was measured on): the mean over the probe sets every model of both arms has."""
    shared = _shared_probe_sets(pd.concat([em, bm]))
    return tuple(m[m["probe_set"].isin(shared)].groupby("backbone")["centroid"].mean() for m in (em, bm))


def _f5_comparison(ft, models, source, label, levels) -> dict:
    """Centroid and robustness, edited arm ``label`` vs the unedited arm of ``source``."""
    row = {SOURCE: source, "edit": label}
    em, bm = (models[(models[SOURCE] == source) & (models["edit_label"] == lab)] if not models.empty else models
              for lab in (label, "unedited"))
    by_model = len(em) and len(bm) and em["backbone"].nunique() >= 2 and bm["backbone"].nunique() >= 2
    if by_model:
        c = _compare(*_model_centroids(em, bm), pairs=False)
        row["centroid_of"] = "pretrained models"
    else:  # one backbone per arm: clean fine-tuned centroids paired by (target, fold, seed, recipe)
        clean = distinct_models(ft[ft["degradation"] == ft["degradation"].min()])
        clean = clean[clean["psd_finetuned"].map(is_vec)] if "psd_finetuned" in clean else clean.iloc[:0]
        cen = {lab: _arm(clean, source, lab).set_index("finetune")["psd_finetuned"].map(lambda p: summarize(p)["centroid"])
               for lab in (label, "unedited")}
        c = _compare(cen[label], cen["unedited"], pairs=True)
        row["centroid_of"] = "clean fine-tuned priorities"
    row.update(d_centroid=c["diff"], p_centroid=c["p"], n_centroid=c["n"])
    rob = {lab: _unit_robustness(_arm(ft, source, lab), levels) for lab in (label, "unedited")}
    by_model_rob = all(r["backbone"].nunique() >= 2 for r in rob.values())
    if by_model_rob:
        r = _compare(*(rob[lab].groupby("backbone")["robustness"].mean() for lab in (label, "unedited")), pairs=False)
    else:
        r = _compare(*(rob[lab].groupby("finetune")["robustness"].mean() for lab in (label, "unedited")), pairs=True)
    row.update(robustness_unit=PRETRAINED_MODEL if by_model_rob else FINETUNE_UNIT, d_robustness=r["diff"],
               robustness_edited=r.get("edited", np.nan), robustness_unedited=r.get("unedited", np.nan),
               p_robustness=r["p"], n_robustness=r["n"])
    return row


def _f5_details(trials: pd.DataFrame) -> pd.DataFrame:
    ft = finished_finetunes(trials)
    if SOURCE not in ft or "ood_auc" not in ft or not ft["edited"].any() or ft["edited"].all():
        return pd.DataFrame()
    models = pretrained_models(trials)
    levels = sorted(ft["degradation"].dropna().unique())
    arms = ft[ft["edited"]].groupby([SOURCE, "edit_label"]).size().index
    rows = [_f5_comparison(ft, models, s, lab, levels) for s, lab in arms if (ft[SOURCE] == s).any()
            and (~ft.loc[ft[SOURCE] == s, "edited"]).any()]
    det = pd.DataFrame(rows)
    for col in ("p_centroid", "p_robustness"):
        ok = det[col].notna() if len(det) else pd.Series(dtype=bool)
        det[f"{col}_holm"] = np.nan
        if ok.any():
            det.loc[ok, f"{col}_holm"] = holm(det.loc[ok, col].tolist())
    return det


@finding("F5", claim="Source data editing moves the priority centroid and changes O.O.D. robustness",
         unit=f"centroid: {PRETRAINED_MODEL}; robustness: {FINETUNE_UNIT} (a {PRETRAINED_MODEL} when arms have ≥ 2)")
def check_f5(trials: pd.DataFrame, *, rng: np.random.Generator | None = None) -> Finding:
    f = _start("F5", "per edited arm vs the unedited arm of the same source: Welch t-test on pretrained centroids "
                     "(paired t over clean fine-tunes with one model per arm); robustness (mean O.O.D. AUC over the "
                     "degradation grid, spectral_ray.robustness) per unit, Welch over pretrained models or paired t "
                     "over matched (model, fold) units; both Holm-corrected, both must hold")
    det = _f5_details(trials)
    if det.empty:
        f.verdict = not_testable("finished fine-tuning trials with and without source editing for the same source")
        return f
    f.details, f.priority = det, PRIORITY_TEXT[priority_column(trials)] + " (centroid)"
    ft = finished_finetunes(trials)
    f.n_units = f"{_plural(ft['backbone'].nunique(), 'pretrained model')}, {_plural(ft['unit'].nunique(), '(model, fold) fine-tune')}"
    both = det[det["p_centroid_holm"].notna() & det["p_robustness_holm"].notna()]
    if both.empty:
        need = ("≥ 2 edited and ≥ 2 unedited pretrained models, or ≥ 3 (model, fold) units paired between the arms "
                "with every degradation level (have " + ", ".join(
                    f"{r[SOURCE]} {r['edit']}: {r['n_centroid']} centroid / {r['n_robustness']} robustness units"
                    for _, r in det.iterrows()) + ")")
        f.verdict = not_testable(need)
        return f
    best = both.loc[both[["p_centroid_holm", "p_robustness_holm"]].max(axis=1).idxmin()]
    f.value, f.p_value = float(best["d_robustness"]), float(max(best["p_centroid_holm"], best["p_robustness_holm"]))
    centroid_unit = PRETRAINED_MODEL if best["centroid_of"] == "pretrained models" else FINETUNE_UNIT
    f.n, f.unit = int(best["n_robustness"]), f"centroid: {centroid_unit}; robustness: {best['robustness_unit']}"
    f.n_units = (f"{int(best['n_centroid'])} centroid / {int(best['n_robustness'])} robustness "
                 f"{'units' if best['robustness_unit'] == FINETUNE_UNIT else 'pretrained models'}")
    f.statistic = (f"{best[SOURCE]}, {best['edit']}: Δcentroid = {best['d_centroid']:+.3f} "
                   f"(p = {_fmt(best['p_centroid_holm'])}), Δrobustness = {best['d_robustness']:+.3f} "
                   f"(p = {_fmt(best['p_robustness_holm'])})")
    f.data = (f"centroid of {best['centroid_of']}; robustness per {best['robustness_unit']}, d = 0 twins merged "
              f"into their unit; {_plural(len(det), 'source × edit comparison')}")
    if best["centroid_of"] != "pretrained models" or best["robustness_unit"] == FINETUNE_UNIT:
        f.notes.append("One pretrained model per arm: fine-tunes are the units, so pretraining-seed variation is not "
                       "part of the null (the finding is about these backbones).")
    f.notes += _pin_note(finetune_trials(trials, finished=True).get("ood_auc", pd.Series(dtype=float)),
                         "they enter the robustness means (a mean, not a rank)")
    if len(det) > 1:
        f.notes.append("Shown: the comparison with the strongest joint evidence; p is the larger of its two Holm-corrected p-values.")
    ok = (both["p_centroid_holm"] < ALPHA) & (both["p_robustness_holm"] < ALPHA)
    f.verdict = SUPPORTED if ok.any() else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- all


def check_all(trials: pd.DataFrame, *, seed: int = 0) -> list[Finding]:
    """Run every registered finding on a collected trials table (a check that fails is reported
    as not testable with its error, not raised)."""
    out = []
    for fid, spec in FINDINGS.items():
        try:
            out.append(spec.run(trials, rng=np.random.default_rng(seed)))
        except Exception as e:  # a bug or an unexpected table: say so in the report, keep the others
            out.append(Finding(fid, spec.claim, not_testable(f"a working check (it failed: {type(e).__name__}: {e})"),
                               unit=spec.unit))
    return out


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.to_dict() for f in findings])
