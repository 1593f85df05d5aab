"""Shortcut risk before fine-tuning: the O.O.D. loss that a backbone's alignment with an artifact
predicts, from the relation F4 tests in a finished experiment (docs/RISK.md).

F4 (:mod:`analysis.findings`) relates, per pretrained model and stratum (target × artifact × every
artifact parameter × degradation × other conditions), the alignment of the model's priority on
the target's probe set with the artifact (``align_pretrained``: the artifact-weighted
Σ_{k≥1} p̃_k w_k the trials report, the old band mass for older runs) to the shortcut cost of its
fine-tunes (``shortcut_cost``: I.I.D. − O.O.D. AUC of the same trial, folds averaged). This module
reads exactly that table (:func:`~analysis.findings.f4_table` → :func:`~analysis.findings.f4_per_model`)
and fits it on F4's footing: *within (source × edit arm) blocks*. Within one stratum the slope is a
Theil–Sen median over pairs of models of the same block (a source difference cannot enter it), the
level is the backbone's own block's; a backbone whose source and edit are not a block of the
experiment lies outside what was fitted, and nothing is predicted for it. The new backbone's
alignment is F4's measure on its priority measured on the same probe set, with the stratum's
recorded artifact weight (``spectral-ray risk`` measures the priority with
:func:`spectral_ray.experiment.probe_set` and :func:`~spectral_ray.experiment.probe_priority`).

Whether there is anything to predict is F4's verdict on the whole experiment (its own test, with
the report's seed): without "supported" no cost is predicted. A backbone that is one of the
experiment's models is left out of the fit (a held-out prediction) and its measured cost shown.
:func:`held_out_check` validates without leakage: it leaves out the model's whole seed block
(every backbone of its pretraining seed), re-runs F4's gate and strata without it, and takes the
interval from held-out residuals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .aggregate import RESOLVED
from .findings import (ALPHA, FEW_MODELS, OUTCOME, SUPPORTED, Finding, artifact_alignment, check_f4, f4_per_model,
                       f4_strata_keys, f4_table, weighted_alignment)
from .stats import block_permutation_spearman, tv
from .units import PROBE, finished_finetunes, is_vec, priority_column

__all__ = ["ALIGN", "RiskError", "Basis", "load_basis", "block_of_config", "strata", "match_strata", "artifact_row", "trial_config",
           "representative", "theil_sen", "predict_drop", "assess", "held_out_check", "N_BOOT", "MIN_MODELS", "EXTRAPOLATE"]

ALIGN = "align_pretrained"  # F4's alignment of the pretrained priority (psd_probe) with the artifact
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


def load_basis(trials: pd.DataFrame, *, seed: int = 0, measure_power: bool = True) -> Basis:
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
                 check_f4(trials, rng=np.random.default_rng(seed), measure_power=measure_power))


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


def theil_sen(x, y, blocks=None) -> tuple[np.ndarray, np.ndarray]:
    """Theil–Sen lines of ``y`` on ``x``, batched over rows: ``x``, ``y`` (B, n) or (n,) →
    (slope, intercept), each (B,). Slope = median of the pairwise slopes over pairs with different
    x — only pairs within the same block when ``blocks`` (n,) is given, so a difference between
    blocks (sources, edit arms) cannot enter the slope; intercept = median(y) − slope · median(x)
    (``scipy.stats.theilslopes``' rule; :func:`predict_drop` takes a block's own level); NaN where
    no pair has different x."""
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    i, j = np.triu_indices(x.shape[1], 1)
    if blocks is not None:
        same = np.asarray(blocks)[i] == np.asarray(blocks)[j]
        i, j = i[same], j[same]
    dx, dy = x[:, j] - x[:, i], y[:, j] - y[:, i]
    slopes = np.where(dx != 0, dy / np.where(dx != 0, dx, 1.0), np.nan)
    usable = np.isfinite(slopes).any(axis=1)
    slope = np.full(len(x), np.nan)
    slope[usable] = np.nanmedian(slopes[usable], axis=1)
    return slope, np.median(y, axis=1) - slope * np.median(x, axis=1)


def _block_bootstrap(blocks: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) indices resampling models with replacement within their block."""
    idx = np.tile(np.arange(len(blocks)), (n_boot, 1))
    for b in np.unique(blocks):
        members = np.flatnonzero(blocks == b)
        idx[:, members] = rng.choice(members, (n_boot, len(members)))
    return idx


def predict_drop(x, y, x_new: float, *, blocks=None, block=None, n_boot: int = N_BOOT,
                 rng: np.random.Generator | None = None) -> dict:
    """The within-block Theil–Sen fit of shortcut cost ``y`` on alignment ``x`` (one value per
    pretrained model; ``blocks`` their source × edit arm, default one block) at ``x_new`` for a
    model of ``block``: slope over within-block pairs, level = the median over ``block``'s models of
    y − slope·x. 95 % bootstrap intervals (models resampled within their blocks): ``ci`` of the line
    at ``x_new``, ``pi`` for one new model (a resampled fit plus a residual of the full fit). AUC
    units, clipped to [−1, 1]; ``extrapolated``: ``x_new`` outside ``alignment_range``."""
    rng = rng or np.random.default_rng(0)
    x, y = np.asarray(x, float), np.asarray(y, float)
    blocks = np.zeros(len(x), int) if blocks is None else np.asarray(blocks)
    block = blocks[0] if block is None else block
    own = blocks == block
    slope = float(theil_sen(x, y, blocks)[0][0])
    intercept = float(np.median(y[own] - slope * x[own]))
    resid = y - (slope * x + np.array([np.median((y - slope * x)[blocks == b]) for b in blocks]))
    idx = _block_bootstrap(blocks, n_boot, rng)
    bs = theil_sen(x[idx], y[idx], blocks)[0]
    bi = np.array([np.median(y[k][own] - s * x[k][own]) for k, s in zip(idx, bs)])
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


def _alignment(basis: Basis, stratum: str, artifact: pd.Series, psd) -> tuple[float, str]:
    """F4's alignment of ``psd`` in ``stratum``: with the ``artifact_weight`` the stratum's trials
    recorded (on the probe images at their artifact parameters and dose) where F4 used the trials'
    weighted alignment, else the old band mass of :func:`~analysis.findings.artifact_alignment`."""
    tab = basis.table[basis.table["stratum"] == stratum]
    if len(tab) and str(tab["align_method"].iloc[0]).endswith("(trial-reported)") and "artifact_weight" in basis.trials:
        weights = basis.trials.loc[basis.trials["trial_id"].isin(set(tab["trial_id"])), "artifact_weight"]
        w = next((v for v in weights if isinstance(v, np.ndarray)), None)
        if w is not None:
            return weighted_alignment(np.asarray(psd, float), w), tab["align_method"].iloc[0]
    return artifact_alignment(artifact, np.asarray(psd, float))


def block_of_config(config: dict | None) -> str | None:
    """F4's block (source label · edit label, as :func:`~analysis.findings.f4_table` writes it) of a
    backbone from its pretraining config (``source``, ``source_weights``, ``edit``, ``edit_strength``, …);
    None when the config names no source."""
    from .aggregate import SOURCE as LABEL, edit_label, with_identity

    if not config or (config.get("source") is None and config.get("source_weights") is None):
        return None
    row = with_identity(pd.DataFrame([{k: config.get(k) for k in ("source", "source_weights", "edit", "edit_strength",
                                                                  "edit_omega")}]))
    return f"{row[LABEL].iloc[0]} · {edit_label(row).iloc[0]}"


def _block_of(basis: Basis, backbone: str | None, block: str | None) -> str | None:
    if backbone is not None and backbone in basis.per_model.index.get_level_values("backbone"):
        return str(basis.per_model.xs(backbone, level="backbone")["block"].iloc[0])
    return block


def _fitted_blocks(fit: pd.DataFrame) -> list[str]:
    """The source × edit arms with ≥ 2 models in ``fit``: those the within-block relation has a level for."""
    counts = fit["block"].value_counts()
    return sorted(counts.index[counts >= 2])


def _reason(basis: Basis, fit: pd.DataFrame, align: float, block: str | None) -> str | None:
    """Why no cost is predicted (None: predict)."""
    x = fit[ALIGN].to_numpy(float)
    fitted = _fitted_blocks(fit)
    if not basis.significant:
        return f"F4 is {basis.f4.verdict} in this experiment: the relation is not significant"
    if block not in fitted:
        return (f"the backbone ({block or 'source/edit unknown'}) lies outside the sources/edits the within-source "
                f"relation was fitted on ({', '.join(fitted) or 'none'}): its level cannot be read off them")
    own = fit[fit["block"] == block]
    if len(fit) < MIN_MODELS or own[ALIGN].nunique() < 2:
        return f"{len(own)} models of {block} with {own[ALIGN].nunique()} distinct alignments here (a fit needs ≥ 2)"
    if not x.min() - EXTRAPOLATE * np.ptp(x) <= align <= x.max() + EXTRAPOLATE * np.ptp(x):
        return (f"alignment {align:.4g} lies far outside the models' [{x.min():.4g}, {x.max():.4g}]: the relation "
                "was not measured there")
    return None


def assess(basis: Basis, stratum: str, psd, artifact: pd.Series, *, backbone: str | None = None,
           block: str | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The risk of one backbone (priority ``psd``, (K+1,) on the stratum's probe set) in one
    stratum: its alignment (F4's measure, :func:`_alignment`), where it ranks among the experiment's
    models, the stratum's own within-block ρ(alignment, cost) with its permutation p, the models'
    costs, and — when F4 is supported, the backbone's source × edit arm (``block``, or the block of
    ``backbone`` when it is one of the experiment's models, then left out of the fit) is a block of
    ≥ 2 models here and the alignment lies within their range widened by :data:`EXTRAPOLATE` — the
    predicted shortcut cost (:func:`predict_drop`); otherwise ``reason`` says why there is none."""
    align, method = _alignment(basis, stratum, artifact, psd)
    per = basis.per_model[basis.per_model.index.get_level_values("stratum") == stratum].droplevel("stratum")
    own = per.loc[backbone] if backbone is not None and backbone in per.index else None
    block = _block_of(basis, backbone, block)
    fit = per.drop(index=backbone) if own is not None else per
    x, y = fit[ALIGN].to_numpy(float), fit[OUTCOME].to_numpy(float)
    out = {"stratum": stratum, "alignment": align, "alignment_method": method, "n_models": len(fit), "block": block,
           "models_less_aligned": int((x < align).sum()), "mean_drop": float(y.mean()) if len(y) else np.nan,
           "min_drop": float(y.min()) if len(y) else np.nan, "max_drop": float(y.max()) if len(y) else np.nan,
           "stratum_rho": np.nan, "stratum_p": np.nan, "prediction": None, "held_out": own is not None,
           "few_models": len(fit) < FEW_MODELS}
    if own is not None:
        reported = _reported_probe(basis, backbone, stratum)
        out["measured"] = {"drop": float(own[OUTCOME]), "alignment": float(own[ALIGN]),
                           "priority_tv": tv(psd, reported) if reported is not None else None}
    if len(fit) >= MIN_MODELS:
        r = block_permutation_spearman(x[:, None], y[:, None], fit["block"].to_numpy(), np.random.default_rng(seed))
        out["stratum_rho"], out["stratum_p"] = r["rho"], r["p"]
    out["reason"] = _reason(basis, fit, align, block)
    out["outside"] = bool(basis.significant and block not in _fitted_blocks(fit))
    if out["reason"] is None:
        del out["reason"]
        out["prediction"] = predict_drop(x, y, align, blocks=fit["block"].to_numpy(), block=block, n_boot=n_boot,
                                         rng=np.random.default_rng(seed))
        # F4 pools strata; one stratum alone can be too noisy to rank backbones (docs/RISK.md)
        out["prediction"]["weak_in_stratum"] = not out["stratum_p"] < ALPHA
    return out


def _seed_blocks(per: pd.DataFrame) -> dict:
    """{pretraining seed: its backbones} (siblings of one seed share initialisation and, in old
    experiments, fine-tuning seed and artifact assignment); a backbone without a seed is its own."""
    seeds = per["seed"] if "seed" in per else pd.Series(np.nan, index=per.index)
    out: dict = {}
    for backbone, s in seeds.items():
        out.setdefault(("seed", s) if pd.notna(s) else ("own", backbone), []).append(backbone)
    return out


def held_out_check(basis: Basis, stratum: str, artifact: pd.Series, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Every pretrained model of ``stratum`` predicted without leakage: its whole seed block (every
    backbone of its pretraining seed) is removed from the experiment, F4's gate and table are
    re-made without it (:func:`load_basis` on the remaining trials), and the model is assessed from
    the ``psd_probe`` its trials reported. Intervals come from held-out residuals: each prediction's
    95 % interval is its value plus the 2.5–97.5 % quantiles of the *other* models' held-out
    residuals. Returns ``stratum``, ``n_models``, ``n_predicted``, ``rho`` (Spearman ρ predicted vs
    measured; NaN below 3), ``coverage`` (share of measured costs inside their interval), ``n_blocks``
    (seed blocks left out in turn) and ``models``."""
    per = basis.per_model[basis.per_model.index.get_level_values("stratum") == stratum].droplevel("stratum")
    models = []
    for block_models in _seed_blocks(per).values():
        ids = set(basis.table.loc[basis.table["backbone"].isin(block_models), "trial_id"])
        try:
            sub = load_basis(basis.trials[~basis.trials["trial_id"].isin(ids)], seed=seed, measure_power=False)
        except RiskError as e:
            sub = None
            why = str(e)
        for backbone in block_models:
            psd = _reported_probe(basis, backbone, stratum)
            a = assess(sub, stratum, psd, artifact, block=str(per.loc[backbone, "block"]), n_boot=n_boot, seed=seed) \
                if sub is not None and stratum in set(sub.table["stratum"]) else {"prediction": None, "alignment": np.nan,
                                                                                    "reason": why if sub is None else "stratum gone"}
            models.append({"backbone": backbone, "alignment": a["alignment"], "measured": float(per.loc[backbone, OUTCOME]),
                           "predicted": (a["prediction"] or {}).get("drop"), "reason": a.get("reason")})
    done = [m for m in models if m["predicted"] is not None]
    resid = np.array([m["measured"] - m["predicted"] for m in done])
    for i, m in enumerate(done):
        others = np.delete(resid, i)
        if len(others) >= 3:
            m["interval"] = tuple(float(m["predicted"] + q) for q in np.percentile(others, CI))
            m["covered"] = bool(m["interval"][0] <= m["measured"] <= m["interval"][1])
    rho = stats.spearmanr([m["predicted"] for m in done], [m["measured"] for m in done]).statistic \
        if len(done) >= 3 else np.nan
    covered = [m["covered"] for m in done if "covered" in m]
    return {"stratum": stratum, "n_models": len(models), "n_predicted": len(done), "rho": float(rho),
            "coverage": float(np.mean(covered)) if covered else np.nan, "n_blocks": len(_seed_blocks(per)),
            "models": models}


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
