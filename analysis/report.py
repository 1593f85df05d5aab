"""Write the report of an experiment: report.md + figures (PNG/PDF) + tables (CSV).

``build_report(experiment, out_dir)`` collects the experiment folder, aggregates over folds, draws
the figures, checks F1–F5 and writes ``report.md`` with a setup summary, the findings table, the
embedded figures and the aggregate tables. It returns the path of ``report.md``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .aggregate import (D0_TOLERANCE, GROUP_KEYS, REPLICATE_KEYS, RESOLVED, SOURCE, aggregate, artifact_at_d0, export_csv,
                        finetune_trials, group_keys, robustness)
from .collect import Collected, collect
from .figures import draw_all
from .findings import check_all, f4_table, findings_table
from .search import LOOPED, search_section, search_trials

__all__ = ["build_report", "default_out_dir", "RELIED_ON"]

# What the analysis reads (docs/ARCHITECTURE.md, "What the finetune trainable reports").
RELIED_ON = {
    "config": ["source", "source_weights"] + [k for k in GROUP_KEYS if k != SOURCE] + REPLICATE_KEYS,
    "config (identity of a trained model)": ["pretrain_key or source/source_weights/edit/seed/model/size …",
                                             "target_params/…, fold, finetune_seed, finetune/… (d = 0 twins: analysis/units.py)",
                                             "any other key that varies between trials (becomes a grouping key)"],
    "final metrics": ["ood_auc", "iid_auc", "source_label", f"{RESOLVED}…", "psd_probe", "psd_finetuned"],
    "final metrics (optional)": ["psd_pretrained (own-source priority: an extra, and the fallback without `psd_probe`)",
                                 "psd_artifact (F4 band for artifacts without a recorded ω and bandwidth)",
                                 "robustness, iid_mean, objective (robustness-search trials, tabulated)",
                                 "val_auc, centroid_*, alignment_*, cosine_* (tabulated when present)"],
    "older experiments": ["source/source_weights for `source_label`; artifact_omega, artifact_amplitude, "
                          "artifact_params/… for the artifact's parameters (never today's defaults)"],
    "per report": ["every scalar metric (history.csv)"],
}

FIGURE_CAPTIONS = {
    "auc_vs_degradation": "AUC vs degradation (paper Fig. 2): O.O.D. (top) and I.I.D. (bottom); line: mean over "
                          "folds, band: ± std, marks: each fold's trial.",
    "priorities": "Learning priorities (paper Fig. 3, top), one line per network: each pretrained model (on the "
                  "shared probe set where trials report `psd_probe`) and each fine-tuned network at the lowest "
                  "degradation (d = 0 twins once), counted as the findings count them. The DC bin is left out (it "
                  "holds most of the mass) and each line scaled to unit max over the rest, log y. Arrows: the "
                  "unedited group mean → the edited one (vertical: the bin that changes most; top: the centroid "
                  "shift, DC left out).",
    "priority_heatmaps": "Fine-tuned learning priority vs degradation, original and edited sources (paper Fig. 3, "
                         "middle/bottom).",
    "editing_effect": "O.O.D. AUC with (dashed) and without (solid) source editing (paper Fig. 4); line: mean "
                      "over folds, band: ± std, marks: each fold.",
    "alignment_vs_drop": "Alignment of the priority with the artifact vs O.O.D. AUC drop, one point per trial (F4). "
                         "Alignment is integrated over the artifact's band: the unit-sum priority mass within "
                         "±max(bandwidth/2, 1 bin) of the artifact frequency ω_a (both as the trial recorded them), or, "
                         "without them, in the bins where the artifact's signature reaches ≥ 10 % of its peak (±1 bin). "
                         "The drop is the O.O.D. AUC of the clean (degradation 0) trial of the same backbone, fold and "
                         "shortcut minus the trial's. The pooled ρ mixes artifact frequencies; the findings table "
                         "tests within strata.",
}


def default_out_dir(experiment: str | os.PathLike) -> Path:
    """``EXPERIMENT/report`` for a local folder; ``./<name>-report`` for a remote URI."""
    text = os.fspath(experiment)
    if "://" in text and not text.startswith("file://"):
        return Path.cwd() / f"{text.rstrip('/').rsplit('/', 1)[-1]}-report"
    return Path(text.removeprefix("file://")) / "report"


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    if isinstance(v, np.ndarray):
        return f"[{len(v)} values]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame, max_rows: int = 60) -> str:
    if df is None or df.empty:
        return "_(empty)_\n"
    shown = df.head(max_rows)
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    if len(df) > max_rows:
        lines.append(f"\n_… {len(df) - max_rows} more rows in the CSV._")
    return "\n".join(lines) + "\n"


def _pm(mean, std, n=None) -> str:
    if mean is None or not np.isfinite(mean):
        return ""
    s = f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None and np.isfinite(std) else "")
    return s


def _setup_section(c: Collected) -> list[str]:
    t = c.trials
    out = ["## Setup", "", f"- Experiment: `{c.path}`"]
    if c.state_files:
        out.append(f"- Trial status from `{'`, `'.join(c.state_files)}` (and `error.txt` files)")
    else:
        out.append("- No `experiment_state-*.json` found: status read from the trial files only "
                   "(finished trials without `done: true` show as RUNNING)")
    counts = t.groupby(["kind", "status"]).size().unstack(fill_value=0)
    out.append(f"- {len(t)} trials: " + "; ".join(
        f"{kind}: " + ", ".join(f"{int(n)} {st}" for st, n in row.items() if n) for kind, row in counts.iterrows()))
    varying, constant = [], []
    search_only = (t["kind"] == "robustness").all()
    for col in c.config_columns:
        if col not in t or not t[col].map(lambda v: not isinstance(v, (list, dict, np.ndarray))).all():
            continue
        if search_only and col in LOOPED:  # each trial runs every value of its list (the Search section)
            continue
        vals = pd.unique(t[col].dropna())
        text = ", ".join(_cell(v) for v in sorted(vals, key=str)[:12]) + (" …" if len(vals) > 12 else "")
        (varying if len(vals) > 1 else constant).append(f"`{col}` ∈ {{{text}}}" if len(vals) > 1 else f"`{col}` = {text}")
    if varying:
        out.append("- Swept: " + "; ".join(varying))
    if constant:
        out.append("- Fixed: " + "; ".join(constant))
    if not search_only:  # a search is not fold-aggregated
        keys = group_keys(t, c.config_columns)
        out.append(f"- Aggregation groups: ({', '.join(keys)}); replicates = folds (`fold`, `seed`)")
    bad = t[t["status"] != "TERMINATED"]
    if len(bad):
        out += ["", f"**{len(bad)} trial(s) did not finish** — kept in every table, left out of means and tests:", ""]
        cols = [c_ for c_ in ["trial_id", "status", "n_reports", "error", "source_label", "edit_strength", "degradation", "fold"]
                if c_ in bad]
        out.append(md_table(bad[cols]))
    recovered = t[(t["status"] == "TERMINATED") & t["error"].notna()]
    if len(recovered):
        out += ["", f"{len(recovered)} trial(s) finished after a failed attempt (retried under `max_failures`): "
                + ", ".join(f"`{i}`" for i in recovered["trial_id"])]
    if c.warnings:
        out += ["", "Warnings while reading:", ""] + [f"- {w}" for w in c.warnings]
    return out + [""]


def _is_search(t: pd.DataFrame) -> bool:
    """A search experiment: search trials and no fine-tuning grid beside them."""
    return not search_trials(t).empty and finetune_trials(t).empty


def _findings_section(findings, skipped: int = 0) -> list[str]:
    left_out = skipped - len(findings)
    out = ["## Findings", ""] + ([f"_{left_out} finding(s) that cannot apply to this experiment left out._", ""]
                                  if left_out > 0 else []) + [
           "Each claim of docs/SCIENCE.md is a statistical check. **Verdict** is *supported* (the test is "
           "significant at α = 0.05 in the claimed direction), *not supported* (not significant at a measured power "
           "≥ 80 % for the documented effect), *inconclusive* (not significant, power below 80 %: see the notes), or "
           "*not testable in this experiment* (followed by what is missing). **Statistic** is the effect with its size; **p / CI** the "
           "p-value and, where given, a 95 % interval; **Unit** what one independently trained unit of "
           "replication is, and **n** how many distinct units the test used (d = 0 twins, the same network "
           "scored on different artifacts, count once); **Data** the trials and keys used. AUCs pinned at exactly "
           "0 or 1 (ties) are kept, ranked with midranks and flagged in the notes. docs/FINDINGS.md describes each "
           "test and its measured false-positive rate and power.", "",
           "| | Claim | Verdict | Statistic | p / CI | Unit | n | Data |", "|---|---|---|---|---|---|---|---|"]
    for f in findings:
        pci = []
        if f.p_value is not None:
            pci.append(f"p = {f.p_value:.3g}")
        if f.ci is not None:
            pci.append(f"95 % CI{' of ' + f.ci_of if f.ci_of else ''} [{f.ci[0]:.3g}, {f.ci[1]:.3g}]")
        verdict = f"**{f.verdict}**" if f.testable else f"_{f.verdict}_"
        out.append(f"| {f.id} | {_cell(f.claim)} | {verdict} | {_cell(f.statistic)} | {'; '.join(pci)} | "
                   f"{_cell(f.unit)} | {_cell(f.n_units)} | {_cell(f.data)} |")
    out.append("")
    for f in findings:
        priority = f" Priority compared: {f.priority}." if f.priority else ""
        if f.test or f.notes or priority:
            out.append(f"- **{f.id}** — test: {f.test}.{priority}" + (" " + " ".join(f.notes) if f.notes else ""))
    return out + [""]


def _constant_columns(df: pd.DataFrame, columns) -> list[str]:
    """Of ``columns``, those with one value in every row (of a table with more than one row)."""
    return [c for c in columns if len(df) > 1 and df[c].nunique(dropna=False) == 1]


def _same_for_every_row(df: pd.DataFrame, const: list[str]) -> list[str]:
    """The note under a table that names the columns left out because they never vary."""
    return ["Same for every row: " + ", ".join(f"{c} = {_cell(df[c].iloc[0])}" for c in const) + "\n"] if const else []


def _d0_section(d0: pd.DataFrame) -> list[str]:
    """The protocol's validity check: does the artifact alone read as a class at d = 0?"""
    if d0.empty:
        return []
    out = ["## Does the artifact alone read as a class? (d = 0)", "",
           "At degradation 0 no training image carries the artifact, so O.O.D. − I.I.D. AUC should be ≈ 0. "
           f"A mean gap beyond ±{D0_TOLERANCE:g} (**mimics**) means the artifact on clean negatives reads as the "
           "positive class (negative gap) or the negative one (positive gap): O.O.D. losses of that configuration "
           "at d > 0 are then not all shortcut learning. Gap = per-trial O.O.D. − I.I.D., mean ± std over folds. "
           "Table: `artifact_d0.csv`.", ""]
    show = d0.copy()
    show["gap"] = [_pm(m, sd) for m, sd in zip(d0["gap_mean"], d0["gap_std"])]
    show["mimics"] = ["**yes**" if m else "no" for m in d0["mimics"]]
    const = _constant_columns(show, [c for c in show.columns if c not in ("gap", "mimics", "gap_n")])
    out.append(md_table(show.drop(columns=["gap_mean", "gap_std"] + const).rename(columns={"gap_n": "n"})))
    out += _same_for_every_row(show, const)
    n_bad = int(d0["mimics"].sum())
    out += [f"**{n_bad} of {len(d0)} configuration(s) fail this check.**" if n_bad
            else f"All {len(d0)} configuration(s) pass.", ""]
    return out


def _figures_section(figs: dict) -> list[str]:
    if not figs:
        return []
    out = ["## Figures", ""]
    for name, result in figs.items():
        caption = FIGURE_CAPTIONS.get(name, name)
        if isinstance(result, str):
            out += [f"### {name}", "", f"{caption} — _{result}_", ""]
            continue
        png = next(p for p in result if p.suffix == ".png")
        pdf = next((p for p in result if p.suffix == ".pdf"), None)
        out += [f"### {name}", "", f"![{name}]({png.name})", "",
                caption + (f" ([PDF]({pdf.name}))" if pdf else ""), ""]
    return out


def _tables_section(agg: pd.DataFrame, rob: pd.DataFrame) -> list[str]:
    out = ["## Aggregate tables", "",
           "Mean ± std over folds (sample std). `n` = finished folds; `excl.` = trials in the group that did "
           "not finish; `pinned` = O.O.D. AUCs exactly 0 or 1. Full tables: `aggregate.csv`, `robustness.csv`, "
           "`trials.csv`, `history.csv`.", ""]
    if not rob.empty:
        out += ["### Robustness (mean O.O.D. AUC over the degradation grid)", ""]
        show = rob.copy()
        show["robustness"] = [_pm(m, s) for m, s in zip(rob["robustness"], rob["robustness_std"])]
        show["iid_mean"] = [_pm(m, None) for m in rob["iid_mean"]]
        drop = [c for c in ("robustness_std",) if c in show]
        const = _constant_columns(show, [c for c in show.columns if c not in ("robustness", "iid_mean")])
        out.append(md_table(show.drop(columns=drop + const)))
        out += _same_for_every_row(show, const)
    if not agg.empty:
        out += ["### Per group", ""]
        keys = [c for c in agg.columns if not (c.endswith(("_mean", "_std", "_n")) or c.startswith("n_") or c == "folds")]
        const = _constant_columns(agg, keys)
        show = agg[[c for c in keys if c not in const]].copy()
        show["n"] = agg.get("ood_auc_n", agg["n_trials"])
        show["excl."] = agg["n_excluded"]
        for m, label in (("ood_auc", "O.O.D. AUC"), ("iid_auc", "I.I.D. AUC"), ("centroid_finetuned", "centroid (ft)")):
            if f"{m}_mean" in agg:
                show[label] = [_pm(a, b) for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_std"])]
        if "n_ood_auc_pinned" in agg:
            show["pinned"] = agg["n_ood_auc_pinned"]
        show = show.drop(columns=[c for c in ("n_trials", "n_excluded") if c in show])
        out.append(md_table(show))
        out += _same_for_every_row(agg, const)
    return out


def _other_trials_section(c: Collected) -> list[str]:
    """Robustness-search and pretraining trials: a table each (they are not fold-aggregated)."""
    out = []
    t = c.trials
    for kind, metrics, title in (("robustness", ["robustness", "iid_mean", "objective"], "Robustness-search trials"),
                                 ("pretrain", ["centroid_pretrained", "centroid_pretrained_nodc", "val_accuracy"],
                                  "Pretraining trials")):
        sub = t[t["kind"] == kind]
        if sub.empty:
            continue
        cfg = [k for k in c.config_columns if k in sub and sub[k].map(lambda v: not isinstance(v, (list, dict, np.ndarray))).all()
               and sub[k].nunique(dropna=False) > 1]
        cols = ["trial_id", "status"] + cfg + [m for m in metrics if m in sub]
        if "robustness" in sub:
            sub = sub.sort_values("robustness", ascending=False, na_position="last")
        out += [f"### {title}", "", md_table(sub[cols]), ""]
    return out


def _relied_section() -> list[str]:
    out = ["## Keys this report relies on", "",
           "Read from `params.json` (config) and `result.json` (reports); missing keys make the checks "
           "that need them *not testable* instead of failing. Extra keys are carried into `trials.csv`.", ""]
    out += [f"- {k}: " + ", ".join(f"`{v}`" if " " not in v else v for v in vals) for k, vals in RELIED_ON.items()]
    return out + [""]


def build_report(experiment: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 use_ray: bool | None = None) -> Path:
    """Collect, aggregate, draw, check and write ``report.md``; returns its path. ``use_ray``:
    see :func:`analysis.collect.collect`."""
    c = collect(experiment, use_ray=use_ray)
    out = Path(out_dir) if out_dir is not None else default_out_dir(experiment)
    out.mkdir(parents=True, exist_ok=True)
    t = c.trials
    keys = group_keys(t, c.config_columns)
    agg = aggregate(t, keys=keys)
    rob = robustness(t, keys=keys)
    d0 = artifact_at_d0(t, keys=keys)
    findings = check_all(t)
    figs = draw_all(t, out)

    export_csv(t, out / "trials.csv")
    if not c.history.empty:
        export_csv(c.history, out / "history.csv")
    export_csv(agg, out / "aggregate.csv")
    export_csv(rob, out / "robustness.csv")
    if not d0.empty:
        export_csv(d0, out / "artifact_d0.csv")
    export_csv(findings_table(findings), out / "findings.csv")
    f4 = f4_table(t)
    if not f4.empty:
        export_csv(f4, out / "f4_points.csv")

    name = Path(os.fspath(experiment).rstrip("/")).name
    lines = [f"# spectral-ray report: {name}", "",
             f"_Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {len(t)} trials "
             f"({len(finetune_trials(t, finished=True))} finished fine-tuning trials)._", ""]
    lines += _setup_section(c)
    if _is_search(t):  # search first; the grid's findings and figures only where they apply
        lines += search_section(experiment, t, c.config_columns, out)
        lines += _findings_section([f for f in findings if f.testable], skipped=len(findings)) if any(
            f.testable for f in findings) else [f"_Findings F1–F5 need a grid of fine-tuning trials; none apply to a "
                                                f"search ({len(findings)} left out)._", ""]
        lines += _figures_section({k: v for k, v in figs.items() if not isinstance(v, str)})
        lines += _other_trials_section(c)
    else:
        lines += _findings_section(findings)
        lines += _d0_section(d0)
        lines += _figures_section(figs)
        lines += _tables_section(agg, rob)
        lines += _other_trials_section(c)
        lines += search_section(experiment, t, c.config_columns, out)  # search experiments: analysis/search.py
    lines += _relied_section()
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
