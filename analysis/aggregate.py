"""Aggregate fine-tuning trials over folds, and score shortcut robustness per configuration.

A *group* is one cell of the sweep: (source_label, edit, edit_strength, target, artifact, every
parameter the artifact ran with, degradation) plus any other config key that varies between the
fine-tuning trials (a recipe key such as ``lr`` or ``model``), so that different recipes are never
averaged together. The replicates inside a group are the folds (and their seeds).

Two keys are read from what the trial reported (:func:`with_identity`): ``source_label`` (what the
backbone was pretrained on, published weights included) and ``artifact_resolved/<param>`` (the
artifact's parameters with its defaults filled in). Experiments run before trials reported them
get them from their own params.json keys (``source``/``source_weights``; ``artifact_omega``,
``artifact_amplitude``, ``artifact_params/…``), never from today's defaults.

Only finished trials (``status == "TERMINATED"``) enter the means; the others are counted in
``n_excluded`` so that a missing fold is visible in every table. Standard deviations are sample
standard deviations over folds (ddof = 1; NaN with a single fold).

AUCs pinned at exactly 0 or 1 are ties (every negative scored above every positive, or the
reverse), not a graded measurement: they are counted in ``n_<metric>_pinned``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spectral_ray.editing import is_edit
from spectral_ray.robustness import robustness as level_mean

__all__ = [
    "GROUP_KEYS", "REPLICATE_KEYS", "SCALAR_METRICS", "SOURCE", "RESOLVED", "group_keys", "artifact_keys",
    "with_identity", "finetune_trials", "is_edited", "edit_label", "aggregate", "robustness", "artifact_at_d0",
    "D0_TOLERANCE", "export_csv", "pinned",
]

SOURCE = "source_label"           # what a backbone was pretrained on (reported by the trial)
RESOLVED = "artifact_resolved/"   # prefix of the artifact parameters the trial ran with
# The one list of grouping keys; the artifact's resolved parameters (artifact_keys) join them
# after ``artifact``. ``source``/``source_weights`` and the artifact's config keys are implied.
GROUP_KEYS = [SOURCE, "edit", "edit_strength", "target", "artifact", "degradation"]
REPLICATE_KEYS = ["fold", "seed"]
SCALAR_METRICS = [
    "ood_auc", "iid_auc", "val_auc",
    "centroid_pretrained", "centroid_probe", "centroid_finetuned", "centroid_pretrained_nodc", "centroid_finetuned_nodc",
    "alignment_pretrained", "alignment_finetuned", "band_alignment_pretrained", "band_alignment_finetuned",
    "cosine_pretrained", "cosine_finetuned",
]
AUC_METRICS = ("ood_auc", "iid_auc", "val_auc")
# Config keys never used to split groups: replicates, bookkeeping, and keys that name a run
# rather than a condition.
_NOT_A_CONDITION = set(REPLICATE_KEYS) | {"trial_id", "name", "experiment", "storage_path", "epochs_total",
                                          "data_dir", "cache_dir", "output_dir", "store", "threads",
                                          "source", "source_weights", "artifact_omega", "artifact_amplitude"}


def _is_condition(key: str) -> bool:
    """Seeds (``seed``, ``finetune_seed``, ``data_seed`` …) are replicates, not conditions."""
    return key not in _NOT_A_CONDITION and not key.endswith("seed") and not key.startswith("artifact_params/")


def _config_artifact_params(trials: pd.DataFrame) -> dict[str, str]:
    """{resolved column: params.json column} for experiments whose trials did not report
    ``artifact_resolved``: only what the sweep recorded (``artifact_omega``, ``artifact_amplitude``,
    ``artifact_params/…``)."""
    out = {f"{RESOLVED}omega": "artifact_omega", f"{RESOLVED}amplitude": "artifact_amplitude"}
    out.update({RESOLVED + c.split("/", 1)[1]: c for c in trials.columns if c.startswith("artifact_params/")})
    return {k: v for k, v in out.items() if v in trials}


def _source_label_from_config(source, weights) -> str:
    if not isinstance(weights, str) or not weights:
        return source
    from spectral_ray.experiment import source_label  # the trial's own rule (torch only for weight runs)

    return source_label(source, weights)


def with_identity(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with ``source_label`` and ``artifact_resolved/*`` complete (a copy if anything was
    added): what the trial reported, else its params.json keys (see the module docstring)."""
    out = trials
    if "source" in trials:
        reported = trials[SOURCE] if SOURCE in trials else pd.Series(np.nan, index=trials.index, dtype=object)
        lacking = reported.isna() & trials["source"].notna()
        if lacking.any():
            weights = trials["source_weights"] if "source_weights" in trials else pd.Series(None, index=trials.index)
            out = out.copy()
            out[SOURCE] = reported.astype(object)
            out.loc[lacking, SOURCE] = [_source_label_from_config(s, w)
                                        for s, w in zip(trials.loc[lacking, "source"], weights[lacking])]
    resolved = [c for c in trials.columns if c.startswith(RESOLVED)]
    lacking = trials[resolved].isna().all(axis=1) if resolved else pd.Series(True, index=trials.index)
    fallback = _config_artifact_params(trials)
    if lacking.any() and fallback:
        out = out.copy() if out is trials else out
        for col, cfg in fallback.items():
            if col not in out:
                out[col] = pd.Series(np.nan, index=out.index, dtype=object)
            out[col] = out[col].astype(object)
            out.loc[lacking, col] = trials.loc[lacking, cfg].astype(object)
    return out


def artifact_keys(trials: pd.DataFrame) -> list[str]:
    """The ``artifact_resolved/<param>`` columns of the table, sorted (every artifact parameter)."""
    return sorted(c for c in trials.columns if c.startswith(RESOLVED))


def pinned(values) -> np.ndarray:
    """True where an AUC is exactly 0 or 1 (a tie, flagged instead of ranked)."""
    v = np.asarray(values, dtype=float)
    return (v == 0.0) | (v == 1.0)


def _unset(value, names: set) -> bool:
    """True for a config value that means "none": one of ``names`` or NaN (a key a trial lacks)."""
    return value in names or (isinstance(value, float) and np.isnan(value))


def is_edited(trials: pd.DataFrame) -> pd.Series:
    """True for trials whose source data were edited (:func:`spectral_ray.editing.is_edit`: a
    family and a strength ≠ 0, negative strengths included)."""
    edit = trials["edit"] if "edit" in trials else pd.Series(None, index=trials.index)
    # a trial table without a strength column names its edits only (reports of older runs)
    strength = trials["edit_strength"] if "edit_strength" in trials else pd.Series(1.0, index=trials.index)
    # a bool Series built directly: map() keeps an empty string column's str dtype, and `&` fails
    return pd.Series([is_edit(e, s) for e, s in zip(edit, strength)], index=trials.index, dtype=bool)


def edit_label(trials: pd.DataFrame) -> pd.Series:
    """'unedited', or 'edit s=strength' for edited trials (a short legend label)."""
    edited = is_edited(trials).to_numpy()
    edits = trials["edit"].to_numpy() if "edit" in trials else np.full(len(trials), None)
    strengths = trials["edit_strength"].to_numpy() if "edit_strength" in trials else np.full(len(trials), None)
    labels = []
    for e, s, ed in zip(edits, strengths, edited):
        if not ed:
            labels.append("unedited")
        elif isinstance(s, (int, float, np.integer, np.floating)):
            labels.append(f"{e} s={float(s):g}")
        else:
            labels.append(str(e))
    return pd.Series(labels, index=trials.index, dtype=object)


def finetune_trials(trials: pd.DataFrame, *, finished: bool = False) -> pd.DataFrame:
    """The fine-tuning trials (``kind == 'finetune'`` or, without a kind, those with AUCs), with
    ``source_label`` and ``artifact_resolved/*`` complete (:func:`with_identity`)."""
    trials = with_identity(trials)
    if "kind" in trials:
        ft = trials[trials["kind"] == "finetune"]
    else:
        ft = trials if "ood_auc" in trials else trials.iloc[:0]
    if finished and "status" in ft:
        ft = ft[ft["status"] == "TERMINATED"]
    return ft


def _hashable(v) -> bool:
    return not isinstance(v, (list, dict, np.ndarray))


def group_keys(trials: pd.DataFrame, config_columns: list[str] | None = None) -> list[str]:
    """GROUP_KEYS present in the table with the artifact's parameters after ``artifact``, plus other
    config keys that vary between fine-tuning trials."""
    trials = with_identity(trials)
    ft = finetune_trials(trials)
    keys = [k for k in GROUP_KEYS if k in trials]
    at = keys.index("artifact") + 1 if "artifact" in keys else len(keys)
    keys[at:at] = [k for k in artifact_keys(trials) if trials[k].map(_hashable).all()]
    config_columns = config_columns if config_columns is not None else trials.attrs.get("config_columns", [])
    edited = is_edited(ft) if len(ft) else pd.Series(dtype=bool)
    for c in config_columns:
        if c in keys or not _is_condition(c) or c not in ft or not ft[c].map(_hashable).all():
            continue
        # An edit's own parameters (edit_omega, edit_params/…) mean nothing for unedited trials,
        # which carry them unset: they split groups only when they vary among edited trials.
        rows = ft[c][edited] if c.startswith("edit_") and c != "edit_strength" else ft[c]
        if rows.nunique(dropna=False) > 1:
            keys.append(c)
    return keys


def _present(trials: pd.DataFrame, metrics) -> list[str]:
    return [m for m in metrics if m in trials and pd.api.types.is_numeric_dtype(trials[m])]


def aggregate(trials: pd.DataFrame, metrics: list[str] | None = None, keys: list[str] | None = None) -> pd.DataFrame:
    """Mean ± std over folds of each metric, per group. One row per group.

    Columns: the group keys; ``n_trials`` (all fine-tuning trials in the group, any status);
    ``n_excluded`` (of those, not TERMINATED); ``folds`` (the folds that entered the means);
    ``<metric>_mean``, ``<metric>_std``, ``<metric>_n`` for each metric; ``n_<auc>_pinned``.
    """
    ft = finetune_trials(trials)
    keys = group_keys(trials) if keys is None else keys
    metrics = _present(ft, SCALAR_METRICS if metrics is None else metrics)
    rows = []
    if ft.empty:
        return pd.DataFrame(columns=keys + ["n_trials", "n_excluded", "folds"])
    for key, g in ft.groupby(keys, dropna=False, sort=True) if keys else [((), ft)]:
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["status"] == "TERMINATED"] if "status" in g else g
        row = dict(zip(keys, key))
        row["n_trials"] = len(g)
        row["n_excluded"] = len(g) - len(ok)
        row["folds"] = ",".join(str(f) for f in sorted(ok["fold"].dropna().unique())) if "fold" in ok else ""
        for m in metrics:
            v = pd.to_numeric(ok[m], errors="coerce").dropna()
            row[f"{m}_mean"] = float(v.mean()) if len(v) else np.nan
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
            row[f"{m}_n"] = int(len(v))
            if m in AUC_METRICS:
                row[f"n_{m}_pinned"] = int(pinned(v).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def robustness(trials: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Shortcut robustness per configuration (:func:`spectral_ray.robustness.robustness`: mean
    O.O.D. AUC over the degradation grid, each level weighted equally).

    One row per configuration (the group keys without ``degradation``): ``robustness`` over every
    finished trial; ``robustness_std`` = std over folds of each fold's own robustness (only folds
    that finished every level; ``n_folds_complete`` of them); ``iid_mean`` likewise for I.I.D. AUC;
    ``degradations`` lists the levels that entered. Configurations with different degradation
    grids are not comparable: compare ``degradations``.
    """
    keys = group_keys(trials) if keys is None else keys
    ft = finetune_trials(trials, finished=True)
    if ft.empty or "ood_auc" not in ft or "degradation" not in keys:
        return pd.DataFrame()
    ft = ft.dropna(subset=["ood_auc"])
    cfg_keys = [k for k in keys if k != "degradation"]
    rows = []
    for key, g in ft.groupby(cfg_keys, dropna=False, sort=True) if cfg_keys else [((), ft)]:
        key = key if isinstance(key, tuple) else (key,)
        levels = sorted(g["degradation"].unique())
        iid = g["iid_auc"] if "iid_auc" in g else pd.Series(np.nan, index=g.index)
        per_fold = [level_mean(fg["ood_auc"], fg["degradation"], levels)
                    for _, fg in (g.groupby("fold") if "fold" in g else [])]
        per_fold = [r for r in per_fold if np.isfinite(r)]
        rows.append({**dict(zip(cfg_keys, key)), "degradations": ",".join(f"{d:g}" for d in levels),
                     "n_degradations": len(levels), "robustness": level_mean(g["ood_auc"], g["degradation"]),
                     "iid_mean": level_mean(iid, g["degradation"]),
                     "robustness_std": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else np.nan,
                     "n_folds_complete": len(per_fold)})
    return pd.DataFrame(rows)


D0_TOLERANCE = 0.05  # |O.O.D. − I.I.D.| AUC at d = 0 beyond which an artifact reads as a class
NO_ARTIFACT = {None, "", "none", "None", "null"}


def artifact_at_d0(trials: pd.DataFrame, keys: list[str] | None = None, tolerance: float = D0_TOLERANCE) -> pd.DataFrame:
    """The degradation protocol's validity check: O.O.D. − I.I.D. AUC of the clean (d = 0) trials.

    At d = 0 no training image carries the artifact, so a model that learned the real cue should
    score the test set with the artifact on its negatives (O.O.D.) as well as the clean one
    (I.I.D.). A gap means the artifact itself reads as a class (negative gap: as the positive
    class), and O.O.D. losses at d > 0 are then not all shortcut learning. One row per
    configuration (group keys without ``degradation``) that has finished d = 0 trials and an
    artifact: ``gap_mean`` / ``gap_std`` over the paired per-trial gaps (folds), ``gap_n``, and
    ``mimics`` = |gap_mean| > ``tolerance``.
    """
    keys = group_keys(trials) if keys is None else keys
    ft = finetune_trials(trials, finished=True)
    cols = ["gap_mean", "gap_std", "gap_n", "mimics"]
    if ft.empty or not {"degradation", "ood_auc", "iid_auc"} <= set(ft.columns):
        return pd.DataFrame(columns=cols)
    d0 = ft[pd.to_numeric(ft["degradation"], errors="coerce") == 0]
    if d0.empty:
        return pd.DataFrame(columns=cols)
    if "artifact" in d0:
        d0 = d0[~d0["artifact"].map(lambda a: _unset(a, NO_ARTIFACT))]
    d0 = d0.assign(_gap=pd.to_numeric(d0["ood_auc"], errors="coerce") - pd.to_numeric(d0["iid_auc"], errors="coerce"))
    d0 = d0.dropna(subset=["_gap"])
    if d0.empty:
        return pd.DataFrame(columns=cols)
    cfg_keys = [k for k in keys if k != "degradation" and k in d0]
    rows = []
    for key, g in d0.groupby(cfg_keys, dropna=False, sort=True) if cfg_keys else [((), d0)]:
        key = key if isinstance(key, tuple) else (key,)
        gap = g["_gap"].to_numpy(float)
        row = dict(zip(cfg_keys, key))
        row["gap_mean"] = float(gap.mean())
        row["gap_std"] = float(gap.std(ddof=1)) if len(gap) > 1 else np.nan
        row["gap_n"] = int(len(gap))
        row["mimics"] = bool(abs(gap.mean()) > tolerance)
        rows.append(row)
    return pd.DataFrame(rows)


def export_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV (array-valued cells as space-separated numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for c in out.columns:
        if out[c].map(lambda v: isinstance(v, np.ndarray)).any():
            out[c] = out[c].map(lambda v: " ".join(f"{x:.6g}" for x in v) if isinstance(v, np.ndarray) else v)
    out.to_csv(path, index=False)
    return path
