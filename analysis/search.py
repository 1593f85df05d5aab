"""What a search experiment found (``trainable: robustness``, e.g. sweeps/search-edit.yaml).

:func:`search_section` rebuilds the search as an Optuna study from what the trials wrote (the
sampled parameters in ``params.json``, the objective per degradation level in ``result.json``)
and draws Optuna's own matplotlib views of it: the optimisation history, the objective over the
two main parameters (edit strength × band: a contour with the trials on it) and the parameter
importances (fANOVA). It names the best setting with its I.I.D. and O.O.D. AUCs.

A trial that ran every degradation level is a COMPLETE Optuna trial; one that ASHA stopped early
is PRUNED (its score is over fewer, harder levels, so it is not ranked with the finished ones;
its per-level scores are kept as intermediate values).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["search_trials", "build_study", "search_section"]

OBJECTIVES = ("objective", "robustness")  # what a robustness trial reports, in order of preference
# Complete trials needed before the objective's contour and the parameter importances are drawn:
# Optuna's TPE sampler itself draws its first 10 trials at random before it models the objective
# (TPESampler's n_startup_trials default), and a surface or an fANOVA split fitted to fewer
# points says more about where the points fell than about the objective (2 trials give
# importances 0.50/0.50 whatever the objective).
MIN_COMPLETE_FOR_SURFACE = 10
# What a robustness trial loops over itself: it overrides `degradation`/`fold` with each value
# of `degradations`/`folds` (spectral_ray.experiment.run_robustness).
LOOPED = {"degradation": "degradations", "fold": "folds"}


def _saved_search(experiment: str | os.PathLike) -> dict:
    """The ``search`` block of the sweep.yaml the launcher saved beside the trials ({} if none)."""
    import pyarrow.fs
    import yaml

    text = os.fspath(experiment)
    uri = text if "://" in text else str(Path(text).resolve())
    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        with fs.open_input_stream(f"{root.rstrip('/')}/sweep.yaml") as f:
            return (yaml.safe_load(f.read().decode()) or {}).get("search") or {}
    except (OSError, ValueError):
        return {}


def search_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The robustness-search trials that reported an objective, in the order they were created
    (the counter at the end of Tune's trial id), with ``finished`` = ran every level."""
    t = trials[(trials["kind"] == "robustness")].copy()
    metric = next((m for m in OBJECTIVES if m in t), None)
    if t.empty or metric is None:
        return t.iloc[0:0]
    t = t[t[metric].notna()].copy()
    t["_order"] = t["trial_id"].astype(str).str.extract(r"(\d+)$")[0].astype(float)
    t = t.sort_values(["_order", "trial_id"]).drop(columns="_order")
    if "levels_done" in t and "degradations" in t:
        t["finished"] = [int(n) >= len(d) if isinstance(d, (list, np.ndarray)) else True
                         for n, d in zip(t["levels_done"], t["degradations"])]
    else:
        t["finished"] = t["status"] == "TERMINATED"
    return t


def sampled_params(t: pd.DataFrame, config_columns: list[str]) -> list[str]:
    """Config keys that differ between the search's trials (what the sampler chose)."""
    return [k for k in config_columns if k in t and t[k].map(lambda v: isinstance(v, (int, float, str, bool))).all()
            and t[k].nunique() > 1]


def build_study(t: pd.DataFrame, params: list[str], metric: str, mode: str):
    """An Optuna study holding the search's trials (COMPLETE when finished, else PRUNED)."""
    import optuna

    dists = {}
    for p in params:
        values = t[p]
        if values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            lo, hi = float(values.min()), float(values.max())
            dists[p] = optuna.distributions.FloatDistribution(lo, hi if hi > lo else lo + 1e-9)
        else:
            dists[p] = optuna.distributions.CategoricalDistribution(sorted(values.unique(), key=str))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", study_name="search")
    levels = sorted(c for c in t.columns if c.startswith("ood_auc_d"))
    for _, row in t.iterrows():
        inter = {i: float(row[c]) for i, c in enumerate(levels) if pd.notna(row.get(c))}
        state = optuna.trial.TrialState.COMPLETE if row["finished"] else optuna.trial.TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(
            params={p: (float(row[p]) if isinstance(dists[p], optuna.distributions.FloatDistribution) else row[p])
                    for p in params},
            distributions=dists, value=float(row[metric]) if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values=inter, state=state))
    return study


def looped_keys(t: pd.DataFrame) -> dict[str, list]:
    """{list key: its values} that every search trial loops over inside itself (``degradations``,
    ``folds``), where all trials share one list."""
    out = {}
    for key in LOOPED.values():
        if key in t:
            values = {tuple(v) for v in t[key] if isinstance(v, (list, np.ndarray))}
            if len(values) == 1:
                out[key] = [float(x) if isinstance(x, float) else x for x in next(iter(values))]
    return out


def _draw(study, params: list[str], out: Path) -> dict[str, str | None]:
    """Optuna's matplotlib views as PNGs in ``out``: {name: file, or None with why it is missing}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    views = {"optimization_history": lambda: ovm.plot_optimization_history(study),
             "objective_contour": lambda: ovm.plot_contour(study, params=params[:2]),
             "param_importances": lambda: ovm.plot_param_importances(study)}
    drawn = {}
    import optuna

    complete = sum(tr.state == optuna.trial.TrialState.COMPLETE for tr in study.trials)
    for name, plot in views.items():
        if name == "objective_contour" and len(params) < 2:
            drawn[name] = "needs two sampled parameters"
            continue
        if name != "optimization_history" and complete < MIN_COMPLETE_FOR_SURFACE:
            drawn[name] = (f"not drawn: {complete} complete trial(s), fewer than the {MIN_COMPLETE_FOR_SURFACE} "
                           "a surface or an importance needs (the sampler's own random start-up)")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib views experimental
                ax = plot()
            fig = (ax.flat[0] if isinstance(ax, np.ndarray) else ax).figure
            fig.set_size_inches(6.5, 4.5)
            fig.tight_layout()
            fig.savefig(out / f"search_{name}.png", dpi=110)
            plt.close(fig)
            drawn[name] = f"search_{name}.png"
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few complete trials for a view
            drawn[name] = f"not drawn: {e}"
    return drawn


def search_section(experiment: str | os.PathLike, trials: pd.DataFrame, config_columns: list[str],
                   out: Path) -> list[str]:
    """Markdown lines (with figures written to ``out``) for a search experiment; [] otherwise."""
    t = search_trials(trials)
    if t.empty:
        return []
    saved = _saved_search(experiment)
    metric = saved.get("metric") if saved.get("metric") in t else next(m for m in OBJECTIVES if m in t)
    mode = saved.get("mode", "max")
    params = sampled_params(t, config_columns)
    done = t[t["finished"]]
    lines = ["## Search", "",
             f"{len(t)} search trials ({saved.get('algorithm', 'search')}), objective `{metric}` ({mode}); "
             f"{len(done)} ran every degradation level, {len(t) - len(done)} were stopped early (Optuna: PRUNED, "
             f"not ranked). Sampled: {', '.join(f'`{p}`' for p in params) or 'nothing'}."]
    looped = looped_keys(t)
    if looped:
        lines[-1] += " Looped inside every trial: " + "; ".join(f"`{k}` = {v}" for k, v in looped.items()) + "."
    lines.append("")
    if not done.empty:
        best = done.loc[done[metric].idxmax() if mode == "max" else done[metric].idxmin()]
        setting = ", ".join(f"`{p}` = {best[p]:.3g}" if isinstance(best[p], float) else f"`{p}` = {best[p]}"
                            for p in params)
        aucs = [f"{label} {best[k]:.3f}" for k, label in (("iid_mean", "I.I.D. AUC"), ("robustness", "O.O.D. AUC"))
                if k in best and pd.notna(best[k])]
        lines += [f"**Best setting:** {setting} — {metric} {best[metric]:.3f}; mean over the degradation levels: "
                  f"{', '.join(aucs)} (trial `{best['trial_dir'] if isinstance(best.get('trial_dir'), str) else best['trial_id']}`).", ""]
    if params and len(done) >= 1:
        drawn = _draw(build_study(t, params, metric, mode), params, out)
        captions = {"optimization_history": "Objective per trial in the order the sampler proposed them, with the best so far.",
                    "objective_contour": f"Objective over {' × '.join(f'`{p}`' for p in params[:2])} (contour of the finished "
                                         "trials, each trial a dot).",
                    "param_importances": "How much of the objective's variance each sampled parameter explains (fANOVA)."}
        for name, what in drawn.items():
            if what and what.endswith(".png"):
                lines += [f"![{name}]({what})", "", f"*{captions[name]}*", ""]
            else:
                lines += [f"- {name.replace('_', ' ')}: {what}", ""]
    return lines
