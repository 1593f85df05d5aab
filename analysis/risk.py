"""Shortcut risk before fine-tuning: the O.O.D. loss that a backbone's alignment with an artifact
predicts, from the relation F4 tests in a finished experiment (docs/RISK.md).

F4 (:mod:`analysis.findings`) relates, per pretrained model and stratum (target × artifact × every
artifact parameter × degradation × other conditions), the alignment of the model's priority on
the target's probe set with the artifact's band (``align_pretrained``) to the O.O.D. drop of its
fine-tunes (``ood_drop``: the clean partner's O.O.D. AUC minus the trial's, folds averaged). This
module reads exactly that table (:func:`~analysis.findings.f4_table` →
:func:`~analysis.findings.f4_per_model`) and, within one stratum, fits the drop on the alignment
across the experiment's models with a Theil–Sen line (median of pairwise slopes: rank-robust, no
normality), bootstrapped over models for its interval. The new backbone's alignment comes from
:func:`~analysis.findings.artifact_alignment` — F4's own measure — applied to its priority measured
on the same probe set (``spectral-ray risk`` does that with :func:`spectral_ray.experiment.probe_set`
and :func:`~spectral_ray.experiment.probe_priority`, as trials do).

Whether there is anything to predict is F4's verdict on the whole experiment (its own test, with
the report's seed): without "supported" no drop is predicted. A backbone that is one of the
experiment's models is left out of the fit (a held-out prediction) and its measured drop shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .aggregate import RESOLVED
from .findings import (ALPHA, FEW_MODELS, SUPPORTED, Finding, artifact_alignment, check_f4, f4_per_model, f4_strata_keys, f4_table)
from .stats import joint_permutation_spearman, tv
from .units import PROBE, finished_finetunes, is_vec, priority_column

__all__ = ["ALIGN", "RiskError", "Basis", "load_basis", "strata", "match_strata", "artifact_row", "trial_config",
           "representative", "theil_sen", "predict_drop", "assess", "held_out_check", "N_BOOT", "MIN_MODELS", "EXTRAPOLATE"]

ALIGN = "align_pretrained"  # F4's alignment of the pretrained priority (psd_probe) with the artifact's band
N_BOOT = 2000               # bootstrap resamples of the experiment's models
MIN_MODELS = 3              # models (with ≥ 2 distinct alignments) a stratum needs for a fit
EXTRAPOLATE = 0.25          # predict up to this share of the models' alignment range beyond it, no further
CI = (2.5, 97.5)


class RiskError(ValueError):
    """What the user asked for does not fit the experiment; the message lists what does."""


@dataclass
class Basis:
    """What a finished experiment offers a prediction: F4's table and verdict.

    ``table``: :func:`~analysis.findings.f4_table` (one row per trial at d > 0); ``keys``: its
    strata columns; ``per_model``: :func:`~analysis.findings.f4_per_model` for :data:`ALIGN`
    (index backbone × stratum); ``f4``: :func:`~analysis.findings.check_f4` with the report's
    seed, so its p is the report's."""

    trials: pd.DataFrame
    table: pd.DataFrame
    keys: list[str]
    per_model: pd.DataFrame
    f4: Finding

    @property
    def significant(self) -> bool:
        return self.f4.verdict == SUPPORTED


def load_basis(trials: pd.DataFrame, *, seed: int = 0) -> Basis:
    """F4's table and verdict for a collected trials table. Raises :class:`RiskError` when the
    experiment cannot carry a prediction (no finished fine-tunes at d > 0 with clean partners, or
    no probe-set priorities to compare a new backbone's with)."""
    table = f4_table(trials)
    if table.empty:
        raise RiskError("the experiment has no finished fine-tuning trials at degradation > 0 with `ood_auc` "
                        "(F4's table is empty): nothing to fit")
    if priority_column(trials) != PROBE:
        raise RiskError("the experiment's trials report no `psd_probe` (it predates the shared probe set; F4 used "
                        "each backbone's own-source priority), so a backbone measured on the probe set cannot be "
                        "compared with its models; run the sweep again with the current code")
    return Basis(trials, table, f4_strata_keys(trials), f4_per_model(table, ALIGN),
                 check_f4(trials, rng=np.random.default_rng(seed)))


def strata(basis: Basis) -> pd.DataFrame:
    """One row per stratum: ``stratum``, its key values and ``n_models`` (with an alignment)."""
    first = basis.table.drop_duplicates("stratum")[["stratum"] + basis.keys].reset_index(drop=True)
    counts = basis.per_model.reset_index().groupby("stratum")["backbone"].nunique()
    return first.assign(n_models=first["stratum"].map(counts).fillna(0).astype(int))


def _unset(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a, b) -> bool:
    """Equal as recorded values: both unset, numbers within rounding, else ==."""
    if _unset(a) or _unset(b):
        return _unset(a) and _unset(b)
    number = lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)  # noqa: E731
    if number(a) and number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _label(row: pd.Series, keys: list[str]) -> str:
    return " · ".join(f"{k.removeprefix(RESOLVED)}={row[k]}" for k in keys if not _unset(row[k]))


def match_strata(basis: Basis, *, target: str, family: str, params: dict, degradation: float | None = None) -> pd.DataFrame:
    """The strata of :func:`strata` with this target, artifact family and resolved parameters
    (every ``artifact_resolved/<p>`` stratum key: both unset or equal) and, if given, degradation;
    other conditions (recipes, target parameters) may take any value: one row each. Raises
    :class:`RiskError` listing the experiment's strata when none matches."""
    s = strata(basis)
    wanted = {"target": target, "artifact": family, "degradation": degradation,
              **{k: params.get(k.removeprefix(RESOLVED)) for k in basis.keys if k.startswith(RESOLVED)}}
    ok = pd.Series(True, index=s.index)
    for k, v in wanted.items():
        if k in s and not (k == "degradation" and v is None):
            ok &= s[k].map(lambda x, v=v: _same(x, v))
    if ok.any():
        return s[ok].reset_index(drop=True)
    shown = [k for k in basis.keys if k != "degradation"]
    listing = s.groupby([_label(r, shown) for _, r in s.iterrows()], sort=True)["degradation"].agg(
        lambda d: ", ".join(f"{x:g}" for x in sorted(d.unique())) if "degradation" in s else "")
    asked = _label(pd.Series(wanted), list(wanted))
    raise RiskError(f"no stratum of the experiment matches {asked}. Its strata (degradation levels in brackets): "
                    + "; ".join(f"{lab} [{deg}]" for lab, deg in listing.items()))


def artifact_row(family: str, params: dict, signature) -> pd.Series:
    """The trial-row form :func:`~analysis.findings.artifact_alignment` reads: the artifact's
    resolved parameters as ``artifact_resolved/<p>`` and its signature as ``psd_artifact``."""
    return pd.Series({"artifact": family, **{RESOLVED + k: v for k, v in params.items()},
                      "psd_artifact": np.asarray(signature, float)}, dtype=object)


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def trial_config(row: pd.Series) -> dict:
    """The TrialConfig keys a trial recorded (its params.json, as :func:`analysis.collect.collect`
    flattened it: ``finetune/lr`` → ``{"finetune": {"lr": …}}``); unset values (NaN/None) are left
    out, so the key takes its default only where the trial did not record one."""
    from spectral_ray.config import DICT_PARAMS, TrialConfig

    out: dict = {}
    for name in TrialConfig.model_fields:
        if name in DICT_PARAMS:
            sub = {c.split("/", 1)[1]: _plain(row[c]) for c in row.index
                   if c.startswith(name + "/") and not _unset(row[c])}
            if sub:
                out[name] = sub
        elif name in row.index and not _unset(row[name]) and not isinstance(row[name], np.ndarray):
            out[name] = _plain(row[name])
    return out


def representative(basis: Basis, stratum: str, *, backbone: str | None = None, source: str | None = None) -> pd.Series:
    """A finished trial of ``stratum`` (its config gives the probe set): one of this backbone's if
    it has any, else one of this source's, else the first."""
    ids = set(basis.table.loc[basis.table["stratum"] == stratum, "trial_id"])
    known = finished_finetunes(basis.trials)  # with identities (its `model` column is the network's id)
    known = known[known["trial_id"].isin(ids)]
    pick = known["trial_id"].iloc[0]
    for col, value in (("backbone", backbone), ("source", source)):
        if value is not None and col in known and (known[col] == value).any():
            pick = known.loc[known[col] == value, "trial_id"].iloc[0]
            break
    return basis.trials.loc[basis.trials["trial_id"] == pick].iloc[0]


def theil_sen(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Theil–Sen lines of ``y`` on ``x``, batched over rows: ``x``, ``y`` (B, n) or (n,) →
    (slope, intercept), each (B,). Slope = median of the pairwise slopes over pairs with different
    x; intercept = median(y) − slope · median(x) (``scipy.stats.theilslopes``' rule); NaN where
    all x are equal."""
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    i, j = np.triu_indices(x.shape[1], 1)
    dx, dy = x[:, j] - x[:, i], y[:, j] - y[:, i]
    slopes = np.where(dx != 0, dy / np.where(dx != 0, dx, 1.0), np.nan)
    usable = np.isfinite(slopes).any(axis=1)
    slope = np.full(len(x), np.nan)
    slope[usable] = np.nanmedian(slopes[usable], axis=1)
    return slope, np.median(y, axis=1) - slope * np.median(x, axis=1)


def predict_drop(x, y, x_new: float, *, n_boot: int = N_BOOT, rng: np.random.Generator | None = None) -> dict:
    """The Theil–Sen fit of drop ``y`` on alignment ``x`` (one value per pretrained model) at
    ``x_new``, with 95 % bootstrap intervals over models: ``ci`` of the fitted line at ``x_new``,
    ``pi`` for one new model (a resampled fit plus a residual of the full fit). AUC units; the line
    is clipped to the range a drop can take, [−1, 1] (``extrapolated``: ``x_new`` lies outside
    ``alignment_range``, the models' alignments)."""
    rng = rng or np.random.default_rng(0)
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = (float(v[0]) for v in theil_sen(x, y))
    resid = y - (intercept + slope * x)
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    bs, bi = theil_sen(x[idx], y[idx])
    fit = (bi + bs * x_new)[np.isfinite(bs)]
    one = fit + resid[rng.integers(0, len(x), len(fit))]
    interval = lambda v: tuple(float(q) for q in np.clip(np.percentile(v, CI), -1.0, 1.0))  # noqa: E731
    return {"drop": float(np.clip(intercept + slope * x_new, -1.0, 1.0)), "slope": slope, "intercept": intercept,
            "ci": interval(fit), "pi": interval(one), "n_boot": int(len(fit)),
            "alignment_range": (float(x.min()), float(x.max())),
            "extrapolated": bool(x_new < x.min() or x_new > x.max())}


def _reported_probe(basis: Basis, backbone: str, stratum: str):
    """The ``psd_probe`` the experiment's trials of ``backbone`` in ``stratum`` reported, or None."""
    ids = basis.table.loc[(basis.table["stratum"] == stratum) & (basis.table["backbone"] == backbone), "trial_id"]
    vecs = basis.trials.loc[basis.trials["trial_id"].isin(set(ids)), PROBE]
    vecs = [v for v in vecs if is_vec(v)]
    return vecs[0] if vecs else None


def assess(basis: Basis, stratum: str, psd, artifact: pd.Series, *, backbone: str | None = None,
           n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The risk of one backbone (priority ``psd``, (K+1,) on the stratum's probe set) in one
    stratum: its alignment (F4's measure with ``artifact``, :func:`artifact_row`), where it ranks
    among the experiment's models, the stratum's own Spearman ρ (alignment, drop) with its
    permutation p, its drops, and — when F4 is supported, the stratum has enough models and the
    alignment lies within their range widened by :data:`EXTRAPOLATE` of it — the predicted drop
    (:func:`predict_drop`); otherwise ``reason`` says why there is none. ``backbone`` (a :mod:`analysis.units` backbone id) that
    is one of the stratum's models is left out of the fit; its measured values are returned."""
    align, method = artifact_alignment(artifact, np.asarray(psd, float))
    have = basis.per_model.index.get_level_values("stratum") == stratum
    per = basis.per_model[have].droplevel("stratum")
    own = per.loc[backbone] if backbone is not None and backbone in per.index else None
    fit = per.drop(index=backbone) if own is not None else per
    x, y = fit[ALIGN].to_numpy(float), fit["ood_drop"].to_numpy(float)
    out = {"stratum": stratum, "alignment": align, "alignment_method": method, "n_models": len(fit),
           "models_less_aligned": int((x < align).sum()), "mean_drop": float(y.mean()) if len(y) else np.nan,
           "min_drop": float(y.min()) if len(y) else np.nan, "max_drop": float(y.max()) if len(y) else np.nan,
           "stratum_rho": np.nan, "stratum_p": np.nan, "prediction": None, "held_out": own is not None,
           "few_models": len(fit) < FEW_MODELS}
    if own is not None:
        reported = _reported_probe(basis, backbone, stratum)
        out["measured"] = {"drop": float(own["ood_drop"]), "alignment": float(own[ALIGN]),
                           "priority_tv": tv(psd, reported) if reported is not None else None}
    enough = len(fit) >= MIN_MODELS and len(np.unique(x)) >= 2
    if enough:
        rho, p, _, _ = joint_permutation_spearman(x[:, None], y[:, None], np.random.default_rng(seed))
        out["stratum_rho"], out["stratum_p"] = rho, p
    if not basis.significant:
        out["reason"] = f"F4 is {basis.f4.verdict} in this experiment: the relation is not significant"
    elif not enough:
        out["reason"] = f"{len(fit)} models with {len(np.unique(x))} distinct alignments here (a fit needs ≥ {MIN_MODELS}, ≥ 2)"
    elif not x.min() - EXTRAPOLATE * np.ptp(x) <= align <= x.max() + EXTRAPOLATE * np.ptp(x):
        out["reason"] = (f"alignment {align:.4g} lies far outside the models' [{x.min():.4g}, {x.max():.4g}] (more aligned "
                         f"than {out['models_less_aligned']} of {len(fit)}): the relation was not measured there")
    else:
        out["prediction"] = predict_drop(x, y, align, n_boot=n_boot, rng=np.random.default_rng(seed))
        # F4 pools strata; one stratum alone can be too noisy to rank backbones (docs/RISK.md)
        out["prediction"]["weak_in_stratum"] = not out["stratum_p"] < ALPHA
    return out


def held_out_check(basis: Basis, stratum: str, artifact: pd.Series, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Every pretrained model of ``stratum`` predicted from the others, from the ``psd_probe`` its
    trials reported (:func:`assess` with the model held out): does the predicted drop rank the
    models as their measured drops do? Returns ``stratum``, ``n_models``, ``n_predicted`` (models
    with a prediction), ``rho`` (Spearman ρ predicted vs measured; NaN below 3) and ``models``
    (backbone, alignment, predicted, measured)."""
    per = basis.per_model[basis.per_model.index.get_level_values("stratum") == stratum].droplevel("stratum")
    models = []
    for backbone in per.index:
        psd = _reported_probe(basis, backbone, stratum)
        a = assess(basis, stratum, psd, artifact, backbone=backbone, n_boot=n_boot, seed=seed)
        models.append({"backbone": backbone, "alignment": a["alignment"], "measured": a["measured"]["drop"],
                       "predicted": (a["prediction"] or {}).get("drop"), "reason": a.get("reason")})
    done = [m for m in models if m["predicted"] is not None]
    rho = stats.spearmanr([m["predicted"] for m in done], [m["measured"] for m in done]).statistic \
        if len(done) >= 3 else np.nan
    return {"stratum": stratum, "n_models": len(models), "n_predicted": len(done), "rho": float(rho), "models": models}


def to_jsonable(obj):
    """Numbers, arrays and tuples in plain JSON form (NaN → None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)


def dumps(obj) -> str:
    return json.dumps(to_jsonable(obj), indent=1, allow_nan=False)
