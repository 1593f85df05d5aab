"""The findings F1–F5 of docs/SCIENCE.md as statistical checks.

Each check returns a :class:`Finding` with a verdict — ``"supported"``, ``"not supported"`` or
``"not testable in this experiment: needs …"`` — the statistic, a p-value and/or a confidence
interval, n, and a sentence saying which trials and keys it used. A check that lacks the trials it
needs says so rather than guessing.

Conventions:

* Only finished fine-tuning trials (``status == "TERMINATED"``) are used.
* Distances between priorities are total-variation distances between unit-sum spectra,
  TV(p, q) = ½ Σ_k |p_k − q_k| ∈ [0, 1].
* A *pretrained model* (the replicate for F1/F5) is one (source, edit, edit_strength, seed[,
  model, size]) — trials that share it report the same ``psd_pretrained`` and are counted once.
* AUCs pinned at exactly 0 or 1 are ties: they are flagged (counted in the notes) and left out of
  every rank statistic instead of being ranked.
* α = 0.05; with several comparisons, Holm's correction.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from spectral_ray.spectrum import band_mass, summarize

from .aggregate import edit_label, finetune_trials, group_keys, is_edited, pinned

__all__ = ["Finding", "check_all", "check_f1", "check_f2", "check_f3", "check_f4", "check_f5",
           "SUPPORTED", "NOT_SUPPORTED", "not_testable", "findings_table"]

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
ALPHA = 0.05
IID_MARGIN = 0.05  # F3: I.I.D. "holds" if its fall from lowest to highest degradation is < this (95 % CI)
N_PERM = 5000


def not_testable(needs: str) -> str:
    return f"not testable in this experiment: needs {needs}"


@dataclass
class Finding:
    id: str
    claim: str
    verdict: str
    statistic: str = ""           # what was measured, in words with its value
    value: float | None = None    # the headline statistic
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    ci_of: str = ""               # what the 95 % CI is an interval of
    n: int | None = None
    test: str = ""
    data: str = ""                # which trials/keys were used
    notes: list[str] = field(default_factory=list)
    details: pd.DataFrame | None = None

    @property
    def testable(self) -> bool:
        return not self.verdict.startswith("not testable")

    def to_dict(self) -> dict:
        return {
            "id": self.id, "claim": self.claim, "verdict": self.verdict, "statistic": self.statistic,
            "value": self.value, "p_value": self.p_value, "ci_low": self.ci[0] if self.ci else None,
            "ci_high": self.ci[1] if self.ci else None, "ci_of": self.ci_of, "n": self.n, "test": self.test, "data": self.data,
            "notes": " ".join(self.notes),
        }


CLAIMS = {
    "F1": "Models pretrained on different sources have different learning priorities",
    "F2": "The difference persists through fine-tuning (fine-tuned priority closer to its own source's pretrained priority)",
    "F3": "O.O.D. AUC falls as degradation rises while I.I.D. AUC holds",
    "F4": "Alignment of priority with the artifact goes with larger O.O.D. AUC loss",
    "F5": "Source data editing moves the priority centroid and changes O.O.D. robustness",
}


# ----------------------------------------------------------------------------- helpers


def _tv(p, q) -> float:
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    return 0.5 * float(np.abs(p - q).sum())


def _is_vec(v) -> bool:
    return isinstance(v, np.ndarray) and v.ndim == 1 and v.size > 1 and np.isfinite(v).all() and v.sum() > 0


def _holm(p: list[float]) -> list[float]:
    order = np.argsort(p)
    m, out, running = len(p), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _fmt(x, digits=3) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}g}"


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    return finetune_trials(trials, finished=True)


def pretrained_models(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per pretrained model (source × edit × strength × seed …) with its mean ``psd``.

    Read from finished fine-tuning trials and from ``pretrain`` trials that report
    ``psd_pretrained``. Columns: the key columns, ``edited``, ``edit_label``, ``psd``,
    ``centroid``, ``n_trials``.
    """
    if "psd_pretrained" not in trials:
        return pd.DataFrame()
    ok = trials[(trials.get("status") == "TERMINATED") & trials["psd_pretrained"].map(_is_vec)]
    if "source" not in ok or ok.empty:
        return pd.DataFrame()
    ok = ok.assign(edited=is_edited(ok), edit_label=edit_label(ok))
    if "pretrain_key" in ok and ok["pretrain_key"].map(lambda v: isinstance(v, str) and bool(v)).all():
        rep, keys = "pretrain_key", ["pretrain_key"]  # the backbone store's content hash: exact
    else:
        rep = "seed" if "seed" in ok and ok["seed"].notna().any() else ("fold" if "fold" in ok else "trial_id")
        keys = [k for k in ("source", "edit", "edit_strength", "edit_omega", rep, "model", "size", "source_n")
                if k in ok and ok[k].map(lambda v: not isinstance(v, (list, dict, np.ndarray))).all()]
    rows = []
    for key, g in ok.groupby(keys, dropna=False, sort=True):
        psd = np.mean(np.stack(g["psd_pretrained"].to_list()), axis=0)
        row = {k: g[k].iloc[0] for k in ("source", "edit", "edit_strength", "seed") if k in g}
        row.update(dict(zip(keys, key if isinstance(key, tuple) else (key,))))
        row.update(edited=bool(g["edited"].iloc[0]), edit_label=g["edit_label"].iloc[0], psd=psd / psd.sum(),
                   centroid=summarize(psd)["centroid"], centroid_nodc=summarize(psd, exclude_dc=True)["centroid"],
                   n_trials=len(g), replicate_key=rep)
        rows.append(row)
    return pd.DataFrame(rows)


def _perm_test(a: list[np.ndarray], b: list[np.ndarray], rng: np.random.Generator) -> tuple[float, float, float, int]:
    """Permutation test of TV(mean a, mean b) against relabelled replicates.

    Returns (observed, p, smallest attainable p, number of relabellings)."""
    allv = np.stack(a + b)
    na, n = len(a), len(a) + len(b)
    obs = _tv(allv[:na].mean(0), allv[na:].mean(0))
    total = math.comb(n, na)
    if total <= 20000:
        splits = [list(c) for c in itertools.combinations(range(n), na)]
    else:
        splits = [list(range(na))] + [list(rng.permutation(n)[:na]) for _ in range(N_PERM - 1)]
    null = []
    for idx in splits:
        mask = np.zeros(n, bool)
        mask[idx] = True
        null.append(_tv(allv[mask].mean(0), allv[~mask].mean(0)))
    null = np.asarray(null)
    p = float((null >= obs - 1e-12).sum() / len(null))
    # With equal group sizes every split appears twice (A↔B give the same distance).
    p_min = (2.0 if na == n - na else 1.0) / min(total, len(null))
    return obs, p, p_min, len(null)


# ----------------------------------------------------------------------------- F1


def check_f1(trials: pd.DataFrame, *, rng: np.random.Generator | None = None) -> Finding:
    rng = rng or np.random.default_rng(0)
    f = Finding("F1", CLAIMS["F1"], "", test="permutation test of source labels over pretrained models (seeds)")
    models = pretrained_models(trials)
    if models.empty:
        f.verdict = not_testable("`psd_pretrained` from finished trials of at least two sources")
        return f
    un = models[~models["edited"]]
    counts = un.groupby("source").size()
    usable = sorted(counts[counts >= 2].index)
    f.data = (f"`psd_pretrained` of {len(un)} unedited pretrained models (one per {un['replicate_key'].iloc[0] if len(un) else 'seed'}): "
              + ", ".join(f"{s} {counts[s]}" for s in counts.index))
    if len(usable) < 2:
        f.verdict = not_testable("unedited pretrained priorities from at least two sources with ≥ 4 seeds each "
                                 f"for a permutation null (have {', '.join(f'{s} {n}' for s, n in counts.items())})")
        means = {s: np.mean(np.stack(g["psd"].to_list()), 0) for s, g in un.groupby("source")}
        if len(means) >= 2:  # still say how far apart they are, without a null
            (a, pa), (b, pb) = list(means.items())[:2]
            f.value = _tv(pa, pb)
            f.statistic = (f"TV distance between mean pretrained priorities ({a} vs {b}) = {f.value:.3f} "
                           f"(descriptive: no seed-to-seed spread to compare with)")
        return f
    rows = []
    for a, b in itertools.combinations(usable, 2):
        va = un.loc[un["source"] == a, "psd"].to_list()
        vb = un.loc[un["source"] == b, "psd"].to_list()
        obs, p, p_min, n_null = _perm_test(va, vb, rng)
        within = [_tv(x, y) for grp in (va, vb) for x, y in itertools.combinations(grp, 2)]
        spread = float(np.mean(within)) if within else np.nan
        nodc = _tv(np.mean(va, 0)[1:], np.mean(vb, 0)[1:])
        rows.append({"pair": f"{a} vs {b}", "tv": obs, "p": p, "p_min": p_min, "n_relabellings": n_null,
                     "seed_spread_tv": spread, "ratio_to_spread": obs / spread if spread > 0 else np.inf,
                     "tv_without_dc": nodc, "n": len(va) + len(vb)})
    det = pd.DataFrame(rows)
    det["p_holm"] = _holm(det["p"].tolist())
    f.details = det
    weakest = det.loc[det["p_holm"].idxmax()]
    f.value, f.p_value, f.n = float(weakest["tv"]), float(weakest["p_holm"]), int(un[un["source"].isin(usable)].shape[0])
    f.statistic = (f"TV distance between mean pretrained priorities ({weakest['pair']}) = {weakest['tv']:.3f}, "
                   f"{weakest['ratio_to_spread']:.1f}× the seed-to-seed spread ({weakest['seed_spread_tv']:.3f}); "
                   f"without DC {weakest['tv_without_dc']:.3f}")
    if len(det) > 1:
        f.notes.append(f"{len(det)} source pairs, Holm-corrected; the weakest pair is shown.")
    if (det["p_min"] > ALPHA).any():
        need = next(k for k in range(2, 50) if 2 / math.comb(2 * k, k) < ALPHA / len(det))
        f.verdict = not_testable(f"≥ {need} pretrained seeds per source (with {int(det['n'].min())} models the "
                                 f"permutation test cannot reach p < {ALPHA}: smallest p = {det['p_min'].max():.3f})")
        return f
    f.verdict = SUPPORTED if (det["p_holm"] < ALPHA).all() else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F2


def check_f2(trials: pd.DataFrame) -> Finding:
    f = Finding("F2", CLAIMS["F2"], "", test="one-sided one-sample t-test of TV(other) − TV(own) > 0 over fine-tuned trials")
    models = pretrained_models(trials)
    ft = _finished(trials)
    if models.empty or "psd_finetuned" not in ft:
        f.verdict = not_testable("`psd_pretrained` and `psd_finetuned` from finished fine-tuning trials of ≥ 2 sources")
        return f
    un = models[~models["edited"]]
    means = {s: np.mean(np.stack(g["psd"].to_list()), 0) for s, g in un.groupby("source")}
    if len(means) < 2:
        f.verdict = not_testable(f"pretrained priorities from at least two sources (have {sorted(means)})")
        return f
    cand = ft[ft["psd_finetuned"].map(_is_vec) & ~is_edited(ft) & ft["source"].isin(list(means))]
    level = None
    if "degradation" in cand and len(cand):
        level = float(cand["degradation"].min())
        cand = cand[cand["degradation"] == level]
    if len(cand) < 3:
        f.verdict = not_testable("≥ 3 finished unedited fine-tuning trials with `psd_finetuned` "
                                 f"from sources with pretrained priorities (have {len(cand)})")
        return f
    rows = []
    for _, t in cand.iterrows():
        own = _tv(t["psd_finetuned"], means[t["source"]])
        others = {s: _tv(t["psd_finetuned"], m) for s, m in means.items() if s != t["source"]}
        closest_other = min(others, key=others.get)
        rows.append({"trial_id": t["trial_id"], "source": t["source"], "fold": t.get("fold"), "tv_own": own,
                     "tv_other": others[closest_other], "other": closest_other})
    det = pd.DataFrame(rows)
    diff = det["tv_other"] - det["tv_own"]
    det["margin"] = diff
    res = stats.ttest_1samp(diff, 0.0, alternative="greater")
    ci = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff)) if len(diff) > 1 else None
    f.details, f.n = det, len(det)
    f.value, f.p_value = float(diff.mean()), float(res.pvalue)
    f.ci = (float(ci[0]), float(ci[1])) if ci is not None else None
    f.ci_of = "mean margin"
    f.statistic = (f"mean TV(fine-tuned, other source's pretrained) − TV(fine-tuned, own source's pretrained) = "
                   f"{diff.mean():.3f}; {int((diff > 0).sum())}/{len(diff)} trials closer to their own source")
    f.data = (f"`psd_finetuned` of {len(det)} unedited fine-tuning trials at degradation {level:g} (clean) vs the mean "
              f"`psd_pretrained` per source" if level is not None else f"`psd_finetuned` of {len(det)} trials")
    per_source = det.groupby("source")["margin"].agg(["mean", "count"])
    f.notes.append("Per source mean margin: " + ", ".join(f"{s} {r['mean']:+.3f} (n={int(r['count'])})"
                                                         for s, r in per_source.iterrows()) + ".")
    f.verdict = SUPPORTED if (res.pvalue < ALPHA and diff.mean() > 0) else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F3


def check_f3(trials: pd.DataFrame, *, iid_margin: float = IID_MARGIN) -> Finding:
    f = Finding("F3", CLAIMS["F3"], "", test=f"Spearman ρ(degradation, O.O.D. AUC); I.I.D. change lowest→highest "
                                             f"degradation with 95 % Welch CI, 'holds' if CI > −{iid_margin}")
    ft = _finished(trials)
    if "ood_auc" not in ft or "degradation" not in ft:
        f.verdict = not_testable("finished fine-tuning trials reporting `ood_auc` with a `degradation` config key")
        return f
    d = ft.dropna(subset=["ood_auc", "degradation"])
    levels = sorted(d["degradation"].unique())
    if len(levels) < 2 or len(d) < 4:
        f.verdict = not_testable(f"fine-tuning trials at ≥ 2 degradation levels (have {len(levels)}, {len(d)} trials)")
        return f
    pin = pinned(d["ood_auc"])
    ranked = d[~pin]
    if ranked["degradation"].nunique() < 2 or len(ranked) < 4:
        f.verdict = not_testable("O.O.D. AUCs that are not pinned at 0 or 1 at ≥ 2 degradation levels")
        return f
    rho, p = stats.spearmanr(ranked["degradation"], ranked["ood_auc"])
    f.value, f.p_value, f.n = float(rho), float(p), len(ranked)
    f.data = (f"`ood_auc`, `iid_auc` of {len(d)} finished fine-tuning trials, degradation levels "
              f"{', '.join(f'{x:g}' for x in levels)}")
    if pin.any():
        pins = d[pin]
        f.notes.append(f"{int(pin.sum())} O.O.D. AUCs pinned at exactly 0/1 (ties) flagged and not ranked "
                       f"(at degradation {', '.join(f'{x:g}' for x in sorted(pins['degradation'].unique()))}; values "
                       f"{', '.join(f'{x:g}' for x in sorted(pins['ood_auc'].unique()))}).")
    # Per configuration trend, for the details table.
    keys = [k for k in group_keys(trials) if k != "degradation" and k in ranked]
    rows = []
    for key, g in ranked.groupby(keys, dropna=False) if keys else [((), ranked)]:
        if g["degradation"].nunique() >= 2:
            r, pp = stats.spearmanr(g["degradation"], g["ood_auc"])
            rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "rho_ood": r, "p": pp, "n": len(g)})
    f.details = pd.DataFrame(rows)
    iid_ok, iid_text = None, "I.I.D. AUC not reported"
    if "iid_auc" in d and d["iid_auc"].notna().any():
        lo = d.loc[d["degradation"] == levels[0], "iid_auc"].dropna()
        hi = d.loc[d["degradation"] == levels[-1], "iid_auc"].dropna()
        if len(lo) >= 2 and len(hi) >= 2:
            delta = hi.mean() - lo.mean()
            se = math.sqrt(hi.var(ddof=1) / len(hi) + lo.var(ddof=1) / len(lo))
            dof = max(1.0, se**4 / ((hi.var(ddof=1) / len(hi)) ** 2 / (len(hi) - 1) + (lo.var(ddof=1) / len(lo)) ** 2 / (len(lo) - 1))) if se > 0 else 1.0
            half = stats.t.ppf(0.975, dof) * se
            f.ci = (float(delta - half), float(delta + half))
            f.ci_of = "I.I.D. change"
            iid_ok = f.ci[0] > -iid_margin
            iid_text = (f"I.I.D. AUC change {levels[0]:g}→{levels[-1]:g}: {delta:+.3f} "
                        f"(95 % CI {f.ci[0]:+.3f}…{f.ci[1]:+.3f}) — {'holds' if iid_ok else 'does not hold'}")
    f.statistic = f"Spearman ρ(degradation, O.O.D. AUC) = {rho:.3f}; {iid_text}"
    if iid_ok is None:
        f.notes.append("I.I.D. half of the claim not checked: needs `iid_auc` with ≥ 2 trials at the lowest and highest degradation.")
    ood_falls = rho < 0 and p < ALPHA
    f.verdict = SUPPORTED if (ood_falls and iid_ok is not False) else NOT_SUPPORTED
    if ood_falls and iid_ok is False:
        f.notes.append("O.O.D. AUC falls, but I.I.D. AUC falls too.")
    return f


# ----------------------------------------------------------------------------- F4


def _band(t: pd.Series) -> float | None:
    """Half-width of the artifact band used to integrate the priority (≥ one bin either side)."""
    k = len(t["psd_pretrained"]) - 1 if _is_vec(t.get("psd_pretrained")) else None
    bw = t.get("artifact_bandwidth", t.get("artifact_params/bandwidth"))
    bw = float(bw) if isinstance(bw, (int, float)) and np.isfinite(bw) else 0.05  # total width, as in artifacts
    return max(bw / 2, 1.0 / k if k else 0.0)


def artifact_alignment(t: pd.Series, psd) -> tuple[float, str]:
    """Alignment of a priority with the trial's artifact, integrated over the artifact's band.

    ``band``-like artifacts (an ``artifact_omega`` key): unit-sum priority mass within
    ±max(bandwidth/2, 1 bin) of ω_a (``band_mass``; bandwidth = the artifact's total width). Others
    (or no ω_a): priority mass where the artifact's signature ``psd_artifact`` reaches ≥ 10 % of its
    peak, widened by one bin. Returns (value, method)."""
    if not _is_vec(psd):
        return np.nan, ""
    omega = t.get("artifact_omega")
    if isinstance(omega, (int, float)) and np.isfinite(omega) and 0 <= omega <= 1:
        half = _band(t)
        return band_mass(psd, float(omega), 2 * half), f"mass within ±{half:.3g} of ω_a"
    a = t.get("psd_artifact")
    if _is_vec(a) and len(a) == len(psd):
        # The artifact's own band: bins where its signature reaches ≥ 10 % of its peak, widened by
        # one bin either side (a narrow signature would otherwise read a single noisy ring).
        band = a >= 0.1 * a.max()
        band = band | np.roll(band, 1) & (np.arange(len(a)) > 0) | np.roll(band, -1) & (np.arange(len(a)) < len(a) - 1)
        p = np.asarray(psd, float) / np.sum(psd)
        return float(p[band].sum()), "mass in the artifact signature's band"
    return np.nan, ""


def f4_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per finished fine-tuning trial at degradation > 0 with its O.O.D. drop and alignments.

    ``ood_drop`` = O.O.D. AUC of the clean (degradation 0) trial of the same configuration and fold
    minus this trial's O.O.D. AUC (falls back to ``iid_auc − ood_auc`` where there is no clean
    partner; ``drop_kind`` says which). ``align_pretrained`` uses this trial's ``psd_pretrained``;
    ``align_clean_finetuned`` the ``psd_finetuned`` of the clean partner."""
    ft = _finished(trials)
    if "ood_auc" not in ft or "degradation" not in ft:
        return pd.DataFrame()
    keys = [k for k in group_keys(trials) if k != "degradation" and k in ft] + (["fold"] if "fold" in ft else [])
    clean = ft[ft["degradation"] == 0]
    partner = {}
    for _, c in clean.iterrows():
        partner[tuple(str(c[k]) for k in keys)] = c
    rows = []
    for _, t in ft[(ft["degradation"] > 0) & ft["ood_auc"].notna()].iterrows():
        c = partner.get(tuple(str(t[k]) for k in keys))
        if c is not None and np.isfinite(c["ood_auc"]):
            drop, kind, pin_ref = c["ood_auc"] - t["ood_auc"], "vs clean", bool(pinned([c["ood_auc"]])[0])
        elif "iid_auc" in t and np.isfinite(t["iid_auc"]):
            drop, kind, pin_ref = t["iid_auc"] - t["ood_auc"], "iid − ood", bool(pinned([t["iid_auc"]])[0])
        else:
            continue
        a_pre, m_pre = artifact_alignment(t, t.get("psd_pretrained"))
        if not np.isfinite(a_pre) and "band_alignment_pretrained" in t and np.isfinite(t["band_alignment_pretrained"]):
            a_pre, m_pre = float(t["band_alignment_pretrained"]), "reported band_alignment_pretrained"
        a_ft, m_ft = artifact_alignment(t, c.get("psd_finetuned")) if c is not None else (np.nan, "")
        if not np.isfinite(a_ft) and c is not None and "band_alignment_finetuned" in c and np.isfinite(c["band_alignment_finetuned"]):
            a_ft, m_ft = float(c["band_alignment_finetuned"]), "reported band_alignment_finetuned"
        rows.append({
            "trial_id": t["trial_id"], "source": t.get("source"), "edit_label": edit_label(t.to_frame().T).iloc[0],
            "target": t.get("target"), "artifact": t.get("artifact"), "artifact_omega": t.get("artifact_omega"),
            "artifact_amplitude": t.get("artifact_amplitude"), "degradation": t["degradation"], "fold": t.get("fold"),
            "ood_auc": t["ood_auc"], "ood_drop": drop, "drop_kind": kind,
            "pinned": bool(pinned([t["ood_auc"]])[0]) or pin_ref,
            "align_pretrained": a_pre, "align_clean_finetuned": a_ft, "align_method": m_pre or m_ft,
        })
    return pd.DataFrame(rows)


def _stratified_spearman(df: pd.DataFrame, x: str, y: str, strata: list[str], rng: np.random.Generator):
    """n-weighted mean of within-stratum Spearman ρ; p from permuting x within strata."""
    groups = []
    for _, g in df.groupby(strata, dropna=False) if strata else [((), df)]:
        g = g.dropna(subset=[x, y])
        if len(g) >= 3 and g[x].nunique() >= 2 and g[y].nunique() >= 2:
            groups.append((stats.rankdata(g[x]), stats.rankdata(g[y])))
    if not groups:
        return np.nan, np.nan, 0, 0

    def pearson(a, b):  # on ranks = Spearman's ρ (ties keep their average ranks)
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    def stat(gs):
        num = sum(len(a) * pearson(a, b) for a, b in gs)
        return num / sum(len(a) for a, _ in gs)

    obs = stat(groups)
    null = np.array([stat([(rng.permutation(a), b) for a, b in groups]) for _ in range(2000)])
    p = float((1 + (np.abs(null) >= abs(obs) - 1e-12).sum()) / (1 + len(null)))
    return float(obs), p, sum(len(a) for a, _ in groups), len(groups)


def check_f4(trials: pd.DataFrame, *, rng: np.random.Generator | None = None) -> Finding:
    rng = rng or np.random.default_rng(0)
    f = Finding("F4", CLAIMS["F4"], "", test="Spearman ρ(alignment, O.O.D. drop) within strata of "
                                             "(target, artifact, amplitude, degradation), n-weighted; "
                                             "p by permuting alignment within strata (2000×)")
    tab = f4_table(trials)
    if tab.empty:
        f.verdict = not_testable("finished fine-tuning trials at degradation > 0 with `ood_auc` (and clean partners)")
        return f
    f.details = tab
    n_pin = int(tab["pinned"].sum())
    use = tab[~tab["pinned"]]
    strata = [k for k in ("target", "artifact", "artifact_amplitude", "degradation") if k in use]
    results = {}
    for which in ("align_pretrained", "align_clean_finetuned"):
        results[which] = _stratified_spearman(use, which, "ood_drop", strata, rng)
    primary = "align_pretrained" if results["align_pretrained"][2] else "align_clean_finetuned"
    rho, p, n, n_strata = results[primary]
    if not n:
        f.verdict = not_testable("trials whose alignment with the artifact differs (sources, edits or artifact "
                                 "frequencies) within a degradation level, with `psd_pretrained`/`psd_finetuned` "
                                 "and an artifact frequency or `psd_artifact`")
        if n_pin:
            f.notes.append(f"{n_pin} trials with O.O.D. AUC pinned at 0/1 flagged and not ranked.")
        return f
    other = "align_clean_finetuned" if primary == "align_pretrained" else "align_pretrained"
    names = {"align_pretrained": "pretrained priority", "align_clean_finetuned": "clean-fine-tuned priority"}
    f.value, f.p_value, f.n = rho, p, n
    kinds = ", ".join(sorted(tab["drop_kind"].unique()))
    f.statistic = (f"Spearman ρ(alignment of the {names[primary]}, O.O.D. drop) = {rho:.3f} "
                   f"(verdict uses the {names[primary]}); with the {names[other]}: "
                   f"ρ = {_fmt(results[other][0])}, p = {_fmt(results[other][1])}")
    f.data = (f"{len(tab)} finished trials at degradation > 0 in {n_strata} strata; alignment = "
              f"{tab['align_method'].iloc[0] or 'n/a'}; O.O.D. drop = {kinds}")
    if n_pin:
        f.notes.append(f"{n_pin} trials with an O.O.D. AUC pinned at exactly 0/1 (ties) flagged and not ranked.")
    f.verdict = SUPPORTED if (rho > 0 and p < ALPHA) else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- F5


def check_f5(trials: pd.DataFrame) -> Finding:
    f = Finding("F5", CLAIMS["F5"], "", test="Welch t-test on pretrained centroid (edited vs unedited models); "
                                             "paired t-test over folds on robustness (mean O.O.D. AUC over degradation); Holm")
    models = pretrained_models(trials)
    ft = _finished(trials)
    ft = ft.assign(edited=is_edited(ft), edit_label=edit_label(ft))
    if "source" not in ft or not ft["edited"].any() or ft["edited"].all():
        f.verdict = not_testable("fine-tuning trials with and without source editing (edit_strength > 0 and = 0) "
                                 "for the same source")
        return f
    cfg = [k for k in group_keys(trials) if not k.startswith("edit") and k not in ("degradation", "source") and k in ft]
    rows = []
    for (src, lab), _ in ft[ft["edited"]].groupby(["source", "edit_label"]):
        em = models[(models["source"] == src) & (models["edit_label"] == lab)] if not models.empty else models
        base = models[(models["source"] == src) & ~models["edited"]] if not models.empty else models
        row = {"source": src, "edit": lab}
        if len(base) >= 2 and len(em) >= 2:
            tc = stats.ttest_ind(em["centroid"], base["centroid"], equal_var=False)
            row.update(centroid_of="pretrained models", centroid_unedited=base["centroid"].mean(),
                       centroid_edited=em["centroid"].mean(), d_centroid=em["centroid"].mean() - base["centroid"].mean(),
                       p_centroid=float(tc.pvalue), n_models=len(em) + len(base))
        else:
            # One backbone per arm: pretraining seeds are not sampled. Use the clean fine-tuned
            # priorities, paired by (config, fold), so at least fine-tuning variation is the null.
            cen = {}
            for flag, sel in ((True, ft[(ft["source"] == src) & (ft["edit_label"] == lab)]),
                              (False, ft[(ft["source"] == src) & ~ft["edited"]])):
                if "psd_finetuned" not in sel:
                    cen[flag] = {}
                    continue
                sel = sel[sel["psd_finetuned"].map(_is_vec)]
                if "degradation" in sel and len(sel):
                    sel = sel[sel["degradation"] == sel["degradation"].min()]
                keys = [k for k in cfg + ["fold"] if k in sel]
                cen[flag] = {tuple(str(r[k]) for k in keys): summarize(r["psd_finetuned"])["centroid"]
                             for _, r in sel.iterrows()}
            common = sorted(set(cen[True]) & set(cen[False]))
            if len(common) >= 3:
                a = np.array([cen[True][k] for k in common])
                b = np.array([cen[False][k] for k in common])
                tc = stats.ttest_rel(a, b)
                row.update(centroid_of=f"clean fine-tuned priorities ({len(em)}+{len(base)} pretrained models)",
                           centroid_unedited=b.mean(), centroid_edited=a.mean(), d_centroid=(a - b).mean(),
                           p_centroid=float(tc.pvalue), n_models=len(em) + len(base))
            else:
                row.update(centroid_of="", centroid_unedited=np.nan, centroid_edited=np.nan, d_centroid=np.nan,
                           p_centroid=np.nan, n_models=len(em) + len(base))
        # Robustness per fold: mean over degradation of O.O.D. AUC, paired by (other config keys, fold).
        r = {}
        for edited_flag, sel in ((True, ft[(ft["source"] == src) & (ft["edit_label"] == lab)]),
                                 (False, ft[(ft["source"] == src) & ~ft["edited"]])):
            sel = sel.dropna(subset=["ood_auc"])
            levels = set(ft["degradation"].dropna()) if "degradation" in ft else set()
            per = {}
            for key, g in sel.groupby(cfg + ["fold"], dropna=False) if "fold" in sel else []:
                if not levels or set(g["degradation"]) >= levels:
                    per[key] = g["ood_auc"].mean()
            r[edited_flag] = per
        common = sorted(set(r[True]) & set(r[False]), key=str)
        row["n_pairs"] = len(common)
        if len(common) >= 3:
            a = np.array([r[True][k] for k in common])
            b = np.array([r[False][k] for k in common])
            tr = stats.ttest_rel(a, b)
            row.update(robustness_unedited=b.mean(), robustness_edited=a.mean(), d_robustness=(a - b).mean(),
                       p_robustness=float(tr.pvalue))
        else:
            row.update(robustness_unedited=np.nan, robustness_edited=np.nan, d_robustness=np.nan, p_robustness=np.nan)
        rows.append(row)
    det = pd.DataFrame(rows)
    det["p_centroid_holm"] = np.nan
    has_c = det["p_centroid"].notna()
    if has_c.any():
        det.loc[has_c, "p_centroid_holm"] = _holm(det.loc[has_c, "p_centroid"].tolist())
    f.details = det
    if not has_c.any():
        f.verdict = not_testable("≥ 2 edited and ≥ 2 unedited pretrained models (seeds) of the same source, or ≥ 3 "
                                 "paired clean fine-tuning trials with `psd_finetuned`")
        return f
    testable = det["p_robustness"].notna() & has_c
    det["p_robustness_holm"] = np.nan
    if testable.any():
        det.loc[testable, "p_robustness_holm"] = _holm(det.loc[testable, "p_robustness"].tolist())
    f.details = det
    if not testable.any():
        f.verdict = not_testable("≥ 3 folds with fine-tuning trials at every degradation level for both edited and "
                                 "unedited sources (to pair robustness by fold)")
        return f
    both = det[testable]
    best = both.loc[both[["p_centroid_holm", "p_robustness_holm"]].max(axis=1).idxmin()]
    f.value = float(best["d_robustness"])
    f.p_value = float(max(best["p_centroid_holm"], best["p_robustness_holm"]))
    f.n = int(best["n_pairs"])
    f.statistic = (f"{best['source']}, {best['edit']}: Δcentroid = {best['d_centroid']:+.3f} "
                   f"(p = {_fmt(best['p_centroid_holm'])}), Δrobustness = {best['d_robustness']:+.3f} "
                   f"(p = {_fmt(best['p_robustness_holm'])})")
    f.data = (f"centroid of {best['centroid_of'] or 'priorities'}; robustness = mean `ood_auc` over degradation per "
              f"(config, fold), paired edited vs unedited; {len(det)} source × edit comparison(s)")
    if not str(best["centroid_of"]).startswith("pretrained"):
        f.notes.append("Only one pretrained model per arm: the centroid test uses clean fine-tuned priorities paired by "
                       "(config, fold), so pretraining-seed variation is not part of its null.")
    n_pin = int(pinned(ft["ood_auc"].dropna()).sum())
    if n_pin:
        f.notes.append(f"{n_pin} O.O.D. AUCs pinned at 0/1 enter the robustness means (a mean, not a rank) — flagged.")
    if len(det) > 1:
        f.notes.append("Shown: the comparison with the strongest joint evidence; p is the larger of its two Holm-corrected p-values.")
    ok = (both["p_centroid_holm"] < ALPHA) & (both["p_robustness_holm"] < ALPHA)
    f.verdict = SUPPORTED if ok.any() else NOT_SUPPORTED
    return f


# ----------------------------------------------------------------------------- all


def check_all(trials: pd.DataFrame, *, seed: int = 0) -> list[Finding]:
    """Run F1–F5 on a collected trials table (any check that fails is reported, not raised)."""
    out = []
    for fid, fn in (("F1", lambda: check_f1(trials, rng=np.random.default_rng(seed))), ("F2", lambda: check_f2(trials)),
                    ("F3", lambda: check_f3(trials)), ("F4", lambda: check_f4(trials, rng=np.random.default_rng(seed))),
                    ("F5", lambda: check_f5(trials))):
        try:
            out.append(fn())
        except Exception as e:  # a bug or an unexpected table: say so in the report, keep the others
            out.append(Finding(fid, CLAIMS[fid], not_testable(f"a working check (it failed: {type(e).__name__}: {e})")))
    return out


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.to_dict() for f in findings])
