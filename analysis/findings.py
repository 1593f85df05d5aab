"""The findings F1–F5 of docs/SCIENCE.md as statistical checks, one registered function each.

``@finding("F4", claim=..., unit=...)`` registers a check in :data:`FINDINGS`; :func:`check_all`
runs them in order. A check returns a :class:`Finding` with a verdict — ``"supported"``, ``"not
supported"`` (only where the test's measured power for the documented effect at this design is
≥ 80 %, :mod:`analysis.power`), ``"inconclusive"`` (not significant and underpowered; ``power``
says how much) or ``"not testable in this experiment: needs …"`` — the statistic, a p-value and/or
a confidence interval, the unit of replication with the number of distinct units, the priority
it compared, and a sentence saying which trials and keys it used. docs/FINDINGS.md describes
each test, why it is built that way, and its false-positive rate and power under simulation.

Conventions:

* Only finished fine-tuning trials (``status == "TERMINATED"``) are used.
* A shortcut's cost is measured within one network: I.I.D. − O.O.D. AUC of the same trial (F4,
  F5, ``spectral-ray risk``); F4's alignment effect is tested within (source × edit arm) blocks.
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

from spectral_ray.registries import Registry
from spectral_ray.spectrum import band_mass, shortcut_alignment, summarize

from .aggregate import RESOLVED, SOURCE, finetune_trials, group_keys, pinned, with_identity
from .stats import block_permutation_spearman, group_permutation, holm, sign_flip, tv, welch_greater
from .units import (BACKBONE_INPUTS, OWN, PRIORITY_TEXT, PROBE, distinct_models, finished_finetunes, is_vec, present,
                    pretrained_models, priority_column, probe_sets, seeds_tied)

__all__ = ["Finding", "FINDINGS", "finding", "check_all", "check_f1", "check_f2", "check_f3", "check_f4", "check_f5",
           "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "VERDICTS", "not_testable", "findings_table", "f4_table",
           "f4_strata_keys", "f4_per_model", "f4_edit_contrast", "artifact_alignment", "weighted_alignment", "OUTCOME",
           "pretrained_models"]

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"  # only where the test's measured power at this design is ≥ POWER_NEEDED
INCONCLUSIVE = "inconclusive"    # not significant, and the measured power is below POWER_NEEDED
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, "not testable in this experiment: needs …")
POWER_NEEDED = 0.8
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
    power: float | None = None    # measured power for the documented effect at this design (analysis/power.py)
    power_of: str = ""            # the effect and how it was measured, in words
    tables: dict = field(default_factory=dict)  # further named tables (F4: "edit_contrast")

    @property
    def testable(self) -> bool:
        return not self.verdict.startswith("not testable")

    def to_dict(self) -> dict:
        return {
            "id": self.id, "claim": self.claim, "verdict": self.verdict, "unit": self.unit, "n": self.n,
            "n_units": self.n_units, "priority": self.priority, "statistic": self.statistic, "value": self.value,
            "p_value": self.p_value, "ci_low": self.ci[0] if self.ci else None,
            "ci_high": self.ci[1] if self.ci else None, "ci_of": self.ci_of, "test": self.test, "data": self.data,
            "power": self.power, "power_of": self.power_of, "notes": " ".join(self.notes),
        }


@dataclass(frozen=True)
class Check:
    id: str
    claim: str
    unit: str
    run: Callable[..., Finding]


FINDINGS: Registry[Check] = Registry("finding")


def finding(fid: str, *, claim: str, unit: str):
    """Decorator: register ``fn(trials, *, rng=None) -> Finding`` as the check of finding ``fid``
    (in :data:`FINDINGS`, whose order is :func:`check_all`'s)."""
    return FINDINGS.register(fid, lambda fn: Check(fid, claim, unit, fn))


def _start(fid: str, test: str) -> Finding:
    spec = FINDINGS[fid]
    return Finding(fid, spec.claim, "", unit=spec.unit, test=test)


def _decide(f: Finding, significant: bool, trials: pd.DataFrame, measure_power: bool) -> None:
    """Set ``f.verdict``: supported if significant; otherwise not supported only where the test's
    measured power for the documented effect at this experiment's design is ≥ POWER_NEEDED
    (:func:`analysis.power.measured_power`), else inconclusive with the power in the notes. Without
    ``measure_power`` (the power simulations' own runs) a non-significant test is inconclusive."""
    if significant:
        f.verdict = SUPPORTED
        return
    if not measure_power:
        f.verdict = INCONCLUSIVE
        return
    from .power import measured_power

    try:
        pw = measured_power(f.id, trials, calls_supported)
    except Exception as e:  # a design the simulator cannot mimic: say so, keep the test's own result
        pw = {"power": None, "text": f"power not measured ({type(e).__name__}: {e})"}
    f.power, f.power_of = pw["power"], pw["text"]
    if pw["power"] is not None and pw["power"] >= POWER_NEEDED:
        f.verdict = NOT_SUPPORTED
        f.notes.append(f"Not supported at measured power {pw['power']:.0%} ({pw['text']}).")
    else:
        f.verdict = INCONCLUSIVE
        have = f"{pw['power']:.0%}" if pw["power"] is not None else "not measurable"
        f.notes.insert(0, f"Inconclusive: not significant, and the test's measured power is {have} "
                          f"(< {POWER_NEEDED:.0%}; {pw['text']}).")


def calls_supported(fid: str, trials: pd.DataFrame, rng: np.random.Generator) -> bool:
    """Whether finding ``fid``'s check, without measuring power, calls ``trials`` supported (what
    :func:`analysis.power.measured_power` counts over simulated experiments)."""
    return FINDINGS[fid].run(trials, rng=rng, measure_power=False).verdict == SUPPORTED


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
def check_f1(trials: pd.DataFrame, *, rng: np.random.Generator | None = None, measure_power: bool = True) -> Finding:
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
    _decide(f, bool((det["p_holm"] < ALPHA).all()), trials, measure_power)
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


def _f2_vectors(ft: pd.DataFrame, models: pd.DataFrame, a: str, b: str):
    """Per pretrained model of sources a and b: its pretrained priorities and its fine-tunes'
    priorities (folds averaged) on the probe sets every such model has, concatenated (unit-sum
    parts: TV of concatenations = mean TV over probe sets). Returns (labels, P, F) or None."""
    g = models[models[SOURCE].isin([a, b])]
    shared = sorted(_shared_probe_sets(g))
    P, F, labels = [], [], []
    for m, rows in g[g["probe_set"].isin(shared)].groupby("backbone"):
        fts = ft[(ft["backbone"] == m) & ft["probe_set"].isin(shared)]
        if rows["probe_set"].nunique() < len(shared) or fts["probe_set"].nunique() < len(shared):
            continue
        P.append(np.concatenate([r["psd"] for _, r in rows.sort_values("probe_set").iterrows()]))
        F.append(np.concatenate([np.mean([v / v.sum() for v in fts.loc[fts["probe_set"] == ps, "psd_finetuned"]], 0)
                                 for ps in shared]))
        labels.append(rows[SOURCE].iloc[0] == a)
    return (np.array(labels), np.stack(P), np.stack(F)) if len(labels) else None


def _f2_margin(labels: np.ndarray, P: np.ndarray, F: np.ndarray) -> tuple[float, np.ndarray]:
    """(margin, y): y_m = TV(F_m, other source's mean) − TV(F_m, own source's mean without m);
    margin = the mean of y over each source, averaged over the two sources."""
    y = np.empty(len(labels))
    for m, own in enumerate(labels):
        same = (labels == own) & (np.arange(len(labels)) != m)
        y[m] = tv(F[m], P[labels != own].mean(0)) - tv(F[m], P[same].mean(0))
    return 0.5 * (y[labels].mean() + y[~labels].mean()), y


def _f2_relabel(labels: np.ndarray, P: np.ndarray, F: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Permutation test of the margin: source labels relabelled over models (a model with its own
    fine-tunes), the margin recomputed with the relabelled means — exchangeable when the sources
    do not differ or fine-tuning forgets (exhaustive up to 20 000 relabellings). (margin, p, p_min)."""
    n, na = len(labels), int(labels.sum())
    obs = _f2_margin(labels, P, F)[0]
    total = math.comb(n, na)
    splits = (list(itertools.combinations(range(n), na)) if total <= 20000
              else [tuple(np.flatnonzero(labels))] + [tuple(rng.permutation(n)[:na]) for _ in range(4999)])
    null = []
    for idx in splits:
        lab = np.zeros(n, bool)
        lab[list(idx)] = True
        null.append(_f2_margin(lab, P, F)[0])
    null = np.asarray(null)
    p_min = (2.0 if na == n - na else 1.0) / len(null)  # equal sizes: a split and its swap give one margin
    return float(obs), float((null >= obs - 1e-12).mean()), p_min


def _f2_pairs(ft: pd.DataFrame, models: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Per source pair a/b: y per pretrained model — its fine-tunes' margins on every probe set
    (one per target) averaged, so a model is one unit however many targets it was fine-tuned on
    (as in F1) — and the one-sided permutation test of source labels over models
    (:func:`_f2_relabel`; the one-sided Welch bound is the interval); Holm over source pairs only."""
    rows = []
    counts = models.drop_duplicates("backbone").groupby(SOURCE).size()
    for a, b in itertools.combinations(sorted(counts.index), 2):
        by_model = bool(counts[a] >= 2 and counts[b] >= 2)
        parts = [_f2_margins(ft[ft["probe_set"] == probe], g, a, b, by_model) for probe, g in models.groupby("probe_set")]
        det = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else pd.DataFrame()
        if det.empty:
            continue
        det = det.groupby(["backbone", SOURCE] if by_model else ["backbone", SOURCE, "fold"], as_index=False)["y"].mean()
        ya, yb = det.loc[det[SOURCE] == a, "y"], det.loc[det[SOURCE] == b, "y"]
        diff, _, ci = welch_greater(ya, yb)
        vecs = _f2_vectors(ft, models, a, b) if by_model else None
        p, p_min = (_f2_relabel(*vecs, rng)[1:] if vecs is not None and min(vecs[0].sum(), (~vecs[0]).sum()) >= 2
                    else (np.nan, np.nan))
        rows.append({"pair": f"{a} vs {b}", "probe_sets": len(parts), "p_min": p_min, "unit": PRETRAINED_MODEL if by_model else FINETUNE_UNIT,
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
def check_f2(trials: pd.DataFrame, *, rng: np.random.Generator | None = None, measure_power: bool = True) -> Finding:
    f = _start("F2", "one-sided permutation test of source labels over pretrained models (the sources' means "
                     "recomputed per relabelling), per source pair a/b, that y = TV(fine-tuned, b) − "
                     "TV(fine-tuned, a) (a model's fine-tunes averaged over folds and probe sets: one unit per model) "
                     "is larger for a's models than for b's (margin = half the difference, with its one-sided 95 % "
                     "lower bound); Holm over source pairs")
    column = priority_column(trials)
    models = pretrained_models(trials, column)
    models = models[~models["edited"]] if not models.empty else models
    ft = _clean_finetunes(trials, column)
    if models.empty or models[SOURCE].nunique() < 2 or ft.empty:
        f.verdict = not_testable("pretrained priorities of ≥ 2 sources and finished unedited fine-tuning trials "
                                 "with `psd_finetuned`")
        return f
    f.priority = PRIORITY_TEXT[column] + " vs `psd_finetuned` (the fine-tuned network on the same images)"
    det = _f2_pairs(ft, models, rng or np.random.default_rng(0))
    if len(det) and det["p"].isna().all() and (det["unit"] == FINETUNE_UNIT).all():
        f.verdict = not_testable("≥ 2 pretrained models (seeds) per source: with one, backbone-specific persistence "
                                 "cannot be told from the source's")
        f.details, f.value = det, float(det["margin"].iloc[0])
        f.statistic = (f"{det['pair'].iloc[0]}: clean fine-tunes {f.value:+.3f} TV closer to their own source's "
                       "pretrained priority (descriptive: one model per source)")
        return f
    if det.empty or det["p"].isna().all():
        f.verdict = not_testable(f"≥ 2 distinct clean fine-tunes from each of two sources (have "
                                 f"{', '.join(f'{s} {n}' for s, n in ft.groupby(SOURCE).size().items())})")
        return f
    det = det[det["p"].notna()]
    f.details = det
    weakest = det.loc[det["p_holm"].idxmax()]
    f.value, f.p_value = float(weakest["margin"]), float(weakest["p_holm"])
    f.ci, f.ci_of = (float(weakest["ci_low"]), float(weakest["ci_high"])), "margin (one-sided 95 % bound)"
    f.unit = weakest["unit"]
    f.n = int(weakest["n_a"] + weakest["n_b"])
    f.n_units = _plural(f.n, "pretrained model" if f.unit == PRETRAINED_MODEL else "distinct clean fine-tune")
    level = f" at degradation {ft['degradation'].min():g}" if "degradation" in ft else ""
    f.statistic = (f"{weakest['pair']}: fine-tunes are {weakest['margin']:+.3f} TV closer to their own source's "
                   f"pretrained priority than to the other's; {int(weakest['closer_to_own'])}/{f.n} closer to their own")
    f.data = (f"`psd_finetuned` of {_plural(len(ft), 'distinct unedited fine-tuned model')}{level} "
              f"(d = 0 twins merged) from {_plural(models['backbone'].nunique(), 'pretrained model')}")
    if int(weakest["probe_sets"]) > 1:
        f.notes.append(f"Each model's margins on {int(weakest['probe_sets'])} probe sets are averaged: one unit per model.")
    if (det["p_min"] * len(det) > ALPHA).any():
        f.verdict = not_testable(f"more pretrained models per source (with {f.n} the permutation test cannot reach "
                                 f"p < {ALPHA}: smallest p = {det['p_min'].max():.3f})")
        return f
    _decide(f, bool(((det["p_holm"] < ALPHA) & (det["margin"] > 0)).all()), trials, measure_power)
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
def check_f3(trials: pd.DataFrame, *, rng: np.random.Generator | None = None, iid_margin: float = IID_MARGIN,
             measure_power: bool = True) -> Finding:
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
    if iid_ok is None:
        f.verdict = not_testable("`iid_auc` at the lowest and highest degradation in ≥ 2 units (the claim is that "
                                 "I.I.D. AUC holds while O.O.D. AUC falls)")
        return f
    ood_falls = rho < 0 and p < ALPHA
    if ood_falls and not iid_ok:
        f.notes.append("O.O.D. AUC falls, but I.I.D. AUC falls too: the claim's second half fails.")
        f.verdict = NOT_SUPPORTED
        return f
    _decide(f, bool(ood_falls and iid_ok), trials, measure_power)
    return f


# ----------------------------------------------------------------------------- F4

SATURATED_OOD = 0.05   # O.O.D. AUC at or below this: the shortcut took everything, the gap ranks I.I.D. AUC
SATURATED_BOTH = 0.99  # I.I.D. and O.O.D. AUC at or above this: no cost can show
SATURATED_SHARE = 0.25 # a stratum with more than this share of saturated (model, stratum) cells is left out
ALIGN_COLUMNS = {PROBE: "shortcut_alignment_probe", OWN: "shortcut_alignment_pretrained"}
SENSITIVITY = "artifact_sensitivity_rel_probe"


def artifact_alignment(t: pd.Series, psd) -> tuple[float, str]:
    """The old band-mass alignment of a priority with the trial's artifact (experiments whose trials
    do not report ``shortcut_alignment_*``; degenerate for broadband artifacts).

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
        return band_mass(psd, float(omega), 2 * half), f"mass within ±{half:.3g} of ω_a (old band mass)"
    a = t.get("psd_artifact")
    if is_vec(a) and len(a) == len(psd):
        from spectral_ray.experiment import artifact_band_mass

        return artifact_band_mass(psd, a, widen=1), "mass in the artifact signature's band (old band mass)"
    return np.nan, ""


def weighted_alignment(psd, weight) -> float:
    """The trials' shortcut alignment (:func:`spectral_ray.spectrum.shortcut_alignment`) of a priority
    (K+1,) the trial did not align itself (e.g. ``spectral-ray risk``'s) with a recorded
    ``artifact_weight``; NaN when either is missing or they are not on the same bins."""
    if not (is_vec(psd) and isinstance(weight, np.ndarray) and len(weight) == len(psd)):
        return np.nan
    return shortcut_alignment(np.asarray(psd, float), np.asarray(weight, float))


def f4_strata_keys(trials: pd.DataFrame) -> list[str]:
    """F4's strata: every condition but the backbone's — target, artifact and all its parameters,
    degradation, … (the columns of :func:`f4_table` that name a row's ``stratum``)."""
    trials = with_identity(trials)  # source_label where the trial did not report it, as group_keys reads it
    backbone = set(present(trials, BACKBONE_INPUTS))
    return [k for k in group_keys(trials) if k not in backbone]


def _alignments(trials: pd.DataFrame, rows: pd.DataFrame, clean: pd.DataFrame, column: str) -> pd.DataFrame:
    """``align_pretrained`` (the trial's reported shortcut alignment of its backbone's priority, else
    the old band mass), ``align_clean_finetuned`` (the clean partner's fine-tuned priority), the
    model-native ``sensitivity`` and ``align_method``."""
    reported = ALIGN_COLUMNS[column]
    if reported in rows and rows[reported].notna().any():
        pre, method = rows[reported].astype(float), "artifact-weighted Σ_{k≥1} p̃_k w_k (trial-reported)"
    else:
        got = [artifact_alignment(t, t.get(column)) for _, t in rows.iterrows()]
        pre, method = pd.Series([g[0] for g in got], index=rows.index), next((g[1] for g in got if g[1]), "")
    if "shortcut_alignment_finetuned" in clean and clean["shortcut_alignment_finetuned"].notna().any():
        ft = clean["shortcut_alignment_finetuned"].astype(float)
    elif "psd_finetuned" in clean:
        ft = pd.Series([artifact_alignment(t, t.get("psd_finetuned"))[0] for _, t in rows.iterrows()], index=rows.index)
        ft = ft.where(clean["psd_finetuned"].map(is_vec))
    else:
        ft = pd.Series(np.nan, index=rows.index)
    sens = rows[SENSITIVITY].astype(float) if SENSITIVITY in rows else pd.Series(np.nan, index=rows.index)
    return pd.DataFrame({"align_pretrained": pre, "align_clean_finetuned": ft.to_numpy(), "sensitivity": sens,
                         "align_method": method}, index=rows.index)


def f4_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per finished fine-tuning trial at degradation > 0 with its shortcut cost and alignments.

    ``shortcut_cost`` = I.I.D. AUC − O.O.D. AUC *of the same trial* (what the shortcut costs this
    network; a clean-task gain moves both and cancels); without ``iid_auc`` the old O.O.D. drop
    vs the clean partner (``cost_kind`` says which). ``ood_drop`` = the clean (d = 0) partner's
    O.O.D. AUC − this trial's, kept for reference. ``saturated``: O.O.D. AUC ≤ 0.05 (the gap then
    ranks I.I.D. AUC) or both AUCs ≥ 0.99. Alignments: :func:`_alignments`. ``backbone``, ``block``
    (source × edit arm), ``seed`` and ``stratum`` identify the model and the condition."""
    ft = finished_finetunes(trials)
    if "ood_auc" not in ft or "degradation" not in ft:
        return pd.DataFrame()
    column, strata = priority_column(trials), f4_strata_keys(trials)
    ft = ft[ft["ood_auc"].notna()]
    rows = ft[ft["degradation"] > 0]
    if rows.empty:
        return pd.DataFrame()
    clean = ft[ft["degradation"] == 0].drop_duplicates(["unit", "shortcut"]).set_index(["unit", "shortcut"])
    partner = clean.reindex(pd.MultiIndex.from_arrays([rows["unit"], rows["shortcut"]]))
    partner.index = rows.index
    iid = rows["iid_auc"].astype(float) if "iid_auc" in rows else pd.Series(np.nan, index=rows.index)
    drop = partner["ood_auc"].astype(float) - rows["ood_auc"]
    cost = (iid - rows["ood_auc"]).where(iid.notna(), drop)
    ok = cost.notna()
    rows, partner, iid, drop, cost = rows[ok], partner[ok], iid[ok], drop[ok], cost[ok]
    ood = rows["ood_auc"].astype(float)
    out = pd.DataFrame({"trial_id": rows.get("trial_id"), "backbone": rows["backbone"],
                        "stratum": [" · ".join(f"{k}={v}" for k, v in zip(strata, r)) for r in rows[strata].itertuples(index=False)],
                        SOURCE: rows[SOURCE], "edit_label": rows["edit_label"],
                        "block": rows[SOURCE].astype(str) + " · " + rows["edit_label"].astype(str),
                        "seed": rows["seed"] if "seed" in rows else None, **{k: rows[k] for k in strata},
                        "fold": rows.get("fold"), "ood_auc": ood, "iid_auc": iid, "shortcut_cost": cost,
                        "cost_kind": np.where(iid.notna(), "iid − ood (same network)", "clean partner's ood − ood"),
                        "ood_drop": drop, "pinned": pinned(ood) | pinned(iid.fillna(0.5)),
                        "saturated": (ood <= SATURATED_OOD) | ((ood >= SATURATED_BOTH) & (iid >= SATURATED_BOTH)),
                        "priority": column}, index=rows.index)
    out = out.join(_alignments(trials, rows, partner, column))
    return out.reset_index(drop=True)


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


OUTCOME = "shortcut_cost"


def f4_per_model(tab: pd.DataFrame, align: str = "align_pretrained") -> pd.DataFrame:
    """F4's units: the rows of :func:`f4_table` with ``align`` and the shortcut cost, folds averaged
    per (pretrained model, stratum). Index (``backbone``, ``stratum``); columns ``align``,
    ``shortcut_cost``, ``ood_drop``, ``saturated`` (share of the cell's trials), ``block``, ``seed``,
    source. F4's test and ``spectral-ray risk``'s fit (analysis/risk.py) both read this table."""
    use = tab.dropna(subset=[align, OUTCOME])
    g = use.groupby(["backbone", "stratum"])
    per = g[[align, OUTCOME, "ood_drop", "saturated"]].mean()
    return per.join(g[["block", "seed", SOURCE, "edit_label"]].first())


def _saturated_strata(per: pd.DataFrame) -> list[str]:
    share = (per["saturated"] > 0.5).groupby(level="stratum").mean()
    return sorted(share.index[share > SATURATED_SHARE])


def _f4_matrices(per: pd.DataFrame, align: str, leave_out: list[str]):
    per = per[~per.index.get_level_values("stratum").isin(leave_out)]
    x_all = per[align].unstack("stratum")
    x, y = _complete(x_all, per[OUTCOME].unstack("stratum"))
    info = per.groupby(level="backbone")[["block", "seed", SOURCE, "edit_label"]].first().loc[x.index]
    return x, y, info, int(x_all.size - x.size)


def _f4_within(tab: pd.DataFrame, align: str, rng: np.random.Generator) -> dict:
    """The primary test: within-(source × edit arm) permutation of models, statistic within strata
    (:func:`analysis.stats.block_permutation_spearman`), saturated strata left out."""
    per = f4_per_model(tab, align)
    if per.empty:
        return {"rho": np.nan, "p": np.nan, "p_min": np.nan, "n_strata": 0, "n_used": 0, "n_models": 0,
                "n_left_out": 0, "saturated": [], "blocks": {}}
    sat = _saturated_strata(per)
    x, y, info, left = _f4_matrices(per, align, sat)
    if x.empty:
        return {"rho": np.nan, "p": np.nan, "p_min": np.nan, "n_strata": 0, "n_used": 0, "n_models": 0,
                "n_left_out": left, "saturated": sat, "blocks": {}}
    r = block_permutation_spearman(x.to_numpy(), y.to_numpy(), info["block"].to_numpy(), rng)
    r.update(n_models=len(x), n_left_out=left, saturated=sat, blocks=info["block"].value_counts().to_dict())
    return r


def _between_sources(tab: pd.DataFrame, align: str) -> float:
    """Descriptive: mean over strata of Spearman ρ(source-mean alignment, source-mean cost) pooled over
    all models (the association the old F4 tested; confounded by everything the source changes)."""
    per = f4_per_model(tab, align).reset_index()
    rhos = [stats.spearmanr(g[align], g[OUTCOME])[0] for _, g in per.groupby("stratum")
            if len(g) >= 3 and g[align].nunique() > 1 and g[OUTCOME].nunique() > 1]
    return float(np.nanmean(rhos)) if rhos else np.nan


def f4_edit_contrast(tab: pd.DataFrame, align: str = "align_pretrained", *, tied: bool = False) -> pd.DataFrame:
    """The interventional contrast: per pair of siblings (an edited and the unedited model of one
    source and pretraining seed) and stratum, Δalignment and Δshortcut cost (edited − unedited).
    Within a (pair, degradation) with ≥ 2 artifact strata both are centred over the artifacts, so a
    general effect of the edit on the shortcut cost (the same for every artifact) cancels and what
    remains is a dose-response: does the cost rise where the edit raised the alignment? With one
    artifact per degradation nothing can be centred (the contrast then assumes the edit acts on the
    cost only through the priority; ``centred`` False). One row per unit: the pair, or with
    ``tied`` seeds (the old seeding) the seed, its pairs averaged. Columns: ``unit``, ``r`` (the
    correlation over strata of Δalignment and Δcost), ``slope`` (Δcost per unit Δalignment),
    ``d_align``, ``d_cost`` (means), ``n_strata``, ``centred``."""
    per = f4_per_model(tab, align).reset_index()
    per = per[~per["stratum"].isin(_saturated_strata(f4_per_model(tab, align)))]
    deg = tab.drop_duplicates("stratum").set_index("stratum")["degradation"] if "degradation" in tab else None
    rows = []
    for (src, seed), g in per.groupby([SOURCE, "seed"]):
        base = g[g["edit_label"] == "unedited"].set_index("stratum")
        for label, e in g[g["edit_label"] != "unedited"].groupby("edit_label"):
            e = e.set_index("stratum")
            common = base.index.intersection(e.index)
            if base.empty or not len(common):
                continue
            d = pd.DataFrame({"a": e.loc[common, align] - base.loc[common, align],
                              "c": e.loc[common, OUTCOME] - base.loc[common, OUTCOME],
                              "d": deg.loc[common].to_numpy() if deg is not None else 0.0})
            n_art = d.groupby("d")["a"].transform("size")
            centred = bool((n_art >= 2).all())
            if centred:
                d[["a", "c"]] = d[["a", "c"]] - d.groupby("d")[["a", "c"]].transform("mean")
            norm = np.sqrt((d["a"] ** 2).sum() * (d["c"] ** 2).sum())
            rows.append({"pair": f"{src} s{seed} {label}", "unit": seed if tied else f"{src} s{seed} {label}",
                         "r": float((d["a"] * d["c"]).sum() / norm) if norm > 0 else np.nan,
                         "slope": float((d["a"] * d["c"]).sum() / (d["a"] ** 2).sum()) if (d["a"] ** 2).sum() > 0 else np.nan,
                         "d_align": float(e.loc[common, align].mean() - base.loc[common, align].mean()),
                         "d_cost": float(e.loc[common, OUTCOME].mean() - base.loc[common, OUTCOME].mean()),
                         "n_strata": len(common), "centred": centred})
    det = pd.DataFrame(rows)
    if det.empty:
        return det
    return det.groupby("unit", as_index=False).agg(
        pairs=("pair", ", ".join), r=("r", "mean"), slope=("slope", "mean"), d_align=("d_align", "mean"),
        d_cost=("d_cost", "mean"), n_strata=("n_strata", "min"), centred=("centred", "all"))


def _f4_contrast_test(contrast: pd.DataFrame, rng: np.random.Generator) -> dict:
    """One-sided sign-flip test over the contrast's units that the mean r is > 0 (a unit's r is
    symmetric about 0 when the alignment does not drive the cost)."""
    r = contrast["r"].dropna() if len(contrast) else pd.Series(dtype=float)
    if len(r) < 2:
        return {"r": np.nan, "p": np.nan, "p_min": np.nan, "n": len(r), "testable": False}
    mean, p, p_min = sign_flip(r.to_numpy(), rng, "greater")
    return {"r": mean, "p": p, "p_min": p_min, "n": len(r), "testable": p_min <= ALPHA,
            "centred": bool(contrast["centred"].all())}


def _f4_statistic(r: dict, sens: dict, contrast: dict, between: float, names: tuple[str, str]) -> str:
    text = (f"within-source ρ(alignment of the {names[0]}, shortcut cost) = {r['rho']:.3f}, p = {_fmt(r['p'])} "
            f"(the verdict's: models relabelled only within their source × edit arm)")
    if np.isfinite(sens.get("rho", np.nan)):
        text += f"; model-native sensitivity cos²(∇ℓ, A(x) − x): ρ = {sens['rho']:.3f}, p = {_fmt(sens['p'])}"
    if contrast["n"]:
        how = "centred over artifacts" if contrast.get("centred") else "uncentred: assumes no other edit effect"
        text += (f"; edit contrast (edited − unedited sibling, {how}): mean r(Δalignment, Δcost) = "
                 f"{_fmt(contrast['r'])}, p = {_fmt(contrast['p'])} over {contrast['n']} units"
                 + ("" if contrast["testable"] else " (too few to reach p < 0.05: it needs ≥ 5)"))
    if np.isfinite(between):
        text += f"; between and within sources pooled (confounded by the source, descriptive): ρ = {between:.3f}"
    return text


@finding("F4", claim="Alignment of priority with the artifact goes with a larger shortcut cost", unit=PRETRAINED_MODEL)
def check_f4(trials: pd.DataFrame, *, rng: np.random.Generator | None = None, measure_power: bool = True) -> Finding:
    rng = rng or np.random.default_rng(0)
    f = _start("F4", "shortcut cost = I.I.D. − O.O.D. AUC of the same trial, folds averaged per (pretrained model, "
                     "stratum); strata = target × artifact × every artifact parameter × degradation × other conditions, "
                     "saturated strata left out; primary: within-(source × edit arm) Spearman ρ(alignment, cost) with "
                     "a one-sided p from relabelling models only within their source × edit arm, jointly in every "
                     "stratum; causal check: edited vs unedited siblings of one seed (Δalignment vs Δcost, sign-flip "
                     "over sibling pairs); the between-source association is descriptive only")
    tab = f4_table(trials)
    if tab.empty:
        f.verdict = not_testable("finished fine-tuning trials at degradation > 0 with `ood_auc` and `iid_auc`")
        return f
    f.details, f.priority = tab, PRIORITY_TEXT[tab["priority"].iloc[0]]
    tied = seeds_tied(finished_finetunes(trials))
    res = {a: _f4_within(tab, a, rng) for a in ("align_pretrained", "align_clean_finetuned", "sensitivity")}
    primary = "align_pretrained" if res["align_pretrained"]["n_strata"] else "align_clean_finetuned"
    r = res[primary]
    contrast_tab = f4_edit_contrast(tab, primary, tied=tied)
    contrast = _f4_contrast_test(contrast_tab, rng)
    f.tables["edit_contrast"] = contrast_tab
    names = {"align_pretrained": "pretrained priority", "align_clean_finetuned": "clean-fine-tuned priority"}
    f.data = (f"{len(tab)} finished trials at degradation > 0 ({tab['backbone'].nunique()} models); alignment = "
              f"{tab['align_method'].iloc[0] or 'n/a'}; cost = {', '.join(sorted(tab['cost_kind'].unique()))}")
    f.notes += _f4_notes(tab, r, tied)
    if not r["n_strata"]:
        f.verdict = not_testable("≥ 2 pretrained models of the same source and edit arm (pretraining seeds) whose "
                                 "alignment and shortcut cost differ within an unsaturated stratum")
        return f
    f.value, f.p_value, f.n = r["rho"], r["p"], r["n_used"]
    f.n_units = (f"{_plural(r['n_used'], 'pretrained model')} in {_plural(sum(v > 1 for v in r['blocks'].values()), 'block')}"
                 f" × {_plural(r['n_strata'], 'stratum')}")
    f.statistic = _f4_statistic(r, res["sensitivity"], contrast, _between_sources(tab, primary), (names[primary],))
    if r["p_min"] > ALPHA:
        f.verdict = not_testable(f"more pretrained seeds per source and edit arm (with these blocks the within-source "
                                 f"permutation test cannot reach p < {ALPHA}: smallest p = {r['p_min']:.3f})")
        return f
    significant = r["rho"] > 0 and r["p"] < ALPHA
    if significant and contrast["testable"] and contrast["r"] < 0:
        f.notes.append("The edit contrast points the other way (edited siblings' cost moved against their "
                       "alignment): the within-source association is not taken as alignment's effect.")
        f.verdict = INCONCLUSIVE
        return f
    _decide(f, significant, trials, measure_power)
    return f


def _f4_notes(tab: pd.DataFrame, r: dict, tied: bool) -> list[str]:
    notes = _pin_note(tab["ood_auc"], "they enter the fold means, ranked with midranks")
    single = [b for b, n in r["blocks"].items() if n < 2]
    if single:
        notes.append(f"{_plural(len(single), 'block')} with a single model ({', '.join(sorted(single))}) "
                     "contribute nothing to the within-source test.")
    if r["saturated"]:
        notes.append(f"{_plural(len(r['saturated']), 'stratum')} left out as saturated (over "
                     f"{SATURATED_SHARE:.0%} of models with O.O.D. AUC ≤ {SATURATED_OOD} or both AUCs ≥ "
                     f"{SATURATED_BOTH}: the cost would rank I.I.D. AUC, or nothing).")
    if r["n_left_out"]:
        notes.append(f"{r['n_left_out']} (model, stratum) cells left out to make the table complete.")
    if (tab["cost_kind"] != "iid − ood (same network)").any():
        notes.append("Some trials lack `iid_auc`: their cost is the clean partner's O.O.D. AUC minus theirs "
                     "(another network's clean ability enters).")
    if not tab["align_method"].iloc[0].endswith("(trial-reported)"):
        notes.append("The trials predate `shortcut_alignment_*`: alignment is the old band mass of the priority "
                     "(constant for broadband artifacts, whose strata then drop out).")
    if tied:
        notes.append("Old seeding (no `artifact_seed_used`): backbones of one pretraining seed share the "
                     "fine-tuning seed and artifact assignment; the edit contrast then counts a seed once.")
    return notes


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
    """Per (model, fold) unit: shortcut robustness = −(mean over d > 0 and over its shortcuts of the
    shortcut cost I.I.D.(d) − O.O.D.(d) of the same network); without ``iid_auc``, the cost relative to
    the unit's d = 0 partner, O.O.D.(0) − O.O.D.(d). A clean-task gain (both AUCs higher at every d)
    does not count: d = 0 enters only as the partner's reference. Units missing a level are left out."""
    rows, high = [], [x for x in levels if x > 0]
    iid = ft["iid_auc"] if "iid_auc" in ft else pd.Series(np.nan, index=ft.index)
    for unit, g in ft.assign(iid_auc=iid).dropna(subset=["ood_auc"]).groupby("unit"):
        per = []
        for _, s in g.groupby("shortcut"):
            at = s.groupby("degradation")[["ood_auc", "iid_auc"]].mean()
            if not set(high) <= set(at.index) or not high:
                continue
            gap = at.loc[high, "iid_auc"] - at.loc[high, "ood_auc"]
            if gap.isna().any():  # no I.I.D. AUC: the drop vs the d = 0 partner
                gap = at.loc[0.0, "ood_auc"] - at.loc[high, "ood_auc"] if 0.0 in at.index else gap
            per.append(-float(gap.mean()))
        if per and np.isfinite(per).all():
            rows.append({"unit": unit, "backbone": g["backbone"].iloc[0], "finetune": g["counterpart"].iloc[0],
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
        cen = {lab: _arm(clean, source, lab).set_index("counterpart")["psd_finetuned"].map(lambda p: summarize(p)["centroid"])
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


@finding("F5", claim="Source data editing moves the priority centroid and changes shortcut robustness",
         unit=f"centroid: {PRETRAINED_MODEL}; robustness: {FINETUNE_UNIT} (a {PRETRAINED_MODEL} when arms have ≥ 2)")
def check_f5(trials: pd.DataFrame, *, rng: np.random.Generator | None = None, measure_power: bool = True) -> Finding:
    f = _start("F5", "per edited arm vs the unedited arm of the same source: Welch t-test on pretrained centroids "
                     "(paired t over clean fine-tunes with one model per arm); shortcut robustness (−mean over d > 0 of "
                     "I.I.D. − O.O.D. AUC of the same network: clean ability does not count) per unit, Welch over "
                     "pretrained models or paired t "
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
    _decide(f, bool(ok.any()), trials, measure_power)
    return f


# ----------------------------------------------------------------------------- all


def check_all(trials: pd.DataFrame, *, seed: int = 0, measure_power: bool = True) -> list[Finding]:
    """Run every registered finding on a collected trials table (a check that fails is reported
    as not testable with its error, not raised). ``measure_power``: simulate this design's power
    for a non-significant test (analysis/power.py), which decides not supported vs inconclusive."""
    out = []
    for fid, spec in FINDINGS.items():
        try:
            out.append(spec.run(trials, rng=np.random.default_rng(seed), measure_power=measure_power))
        except Exception as e:  # a bug or an unexpected table: say so in the report, keep the others
            out.append(Finding(fid, spec.claim, not_testable(f"a working check (it failed: {type(e).__name__}: {e})"),
                               unit=spec.unit))
    return out


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.to_dict() for f in findings])
