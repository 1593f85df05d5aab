"""The paper's figures from a collected trials table (matplotlib, Agg backend, PNG + PDF).

Every figure uses the same colour per source (``source_colors``) and the same line style per
arm (``_edit_styles``: solid = unedited, dashed = the first edit, then dotted, dash-dot …);
AUC lines are the mean over folds with a ±std band and each fold's value drawn over it. Each ``fig_*`` function returns the paths it wrote, or raises
:class:`NotDrawable` with the reason when the experiment lacks the trials it needs. Each is
registered with ``@figure("name")`` in :data:`FIGURES`; :func:`draw_all` draws them in that order.

* ``auc_vs_degradation`` — Fig. 2: AUC vs degradation, O.O.D. (top) / I.I.D. (bottom), mean ± std
  over folds, one line per source × edit, one panel per target/artifact.
* ``priorities`` — Fig. 3 top: learning priorities without the DC bin (unit max, log y, x = ω̄), one
  line per pretrained model and per clean fine-tuned network (counted as analysis/units.py counts
  them); arrows from the unedited to the edited group mean.
* ``priority_heatmaps`` — Fig. 3 middle/bottom: fine-tuned priority vs degradation, original and
  edited sources.
* ``editing_effect`` — Fig. 4: O.O.D. AUC with (dashed) and without (solid) source editing.
* ``alignment_vs_drop`` — alignment of priority with the artifact vs O.O.D. AUC drop, one point
  per trial (pretrained and clean-fine-tuned priorities).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from spectral_ray.registries import Registry  # noqa: E402
from spectral_ray.spectrum import frequency_axis, summarize  # noqa: E402

from .aggregate import RESOLVED, SOURCE, aggregate, edit_label, finetune_trials, group_keys, is_edited  # noqa: E402

__all__ = ["NotDrawable", "source_colors", "FIGURES", "figure", "draw_all", "fig_auc_vs_degradation", "fig_priorities",
           "fig_priority_heatmaps", "fig_editing_effect", "fig_alignment_vs_drop"]

FIGURES: Registry = Registry("figure")  # name -> fig_* function, in drawing order
figure = FIGURES.register  # ``@figure("name")`` on a fig_* function: draw_all and the report draw it

KNOWN_COLORS = {"natural": "#1f77b4", "imagenet": "#1f77b4", "medical": "#d62728", "radimagenet": "#d62728"}
EXTRA_COLORS = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
EDIT_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
PANEL_EXCLUDE = {SOURCE, "edit", "edit_strength", "degradation"}

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "legend.fontsize": 8, "figure.dpi": 110,
                     "savefig.dpi": 150, "axes.spines.top": False, "axes.spines.right": False})


class NotDrawable(Exception):
    """The experiment lacks what a figure needs (the message says what)."""


def source_colors(sources) -> dict[str, str]:
    """A fixed colour per source: natural/imagenet blue, medical/radimagenet red, others in order."""
    out, extra = {}, iter(EXTRA_COLORS * 4)
    for s in sorted(str(x) for x in pd.unique(pd.Series(list(sources)).dropna())):
        out[s] = KNOWN_COLORS.get(s.lower()) or next(extra)
    return out


def _edit_styles(labels) -> dict[str, object]:
    out, others = {"unedited": "-"}, iter(EDIT_STYLES * 4)
    for lab in sorted(set(labels) - {"unedited"}):
        out[lab] = next(others)
    return out


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return paths


def _panel_keys(trials: pd.DataFrame) -> list[str]:
    """Group keys that make panels; artifact parameters other than ω and amplitude only where they vary."""
    ft = finetune_trials(trials)
    shown = {f"{RESOLVED}omega", f"{RESOLVED}amplitude"}
    return [k for k in group_keys(trials) if k not in PANEL_EXCLUDE
            and (not k.startswith(RESOLVED) or k in shown or ft[k].nunique(dropna=False) > 1)]


def _panel_title(key: tuple, keys: list[str]) -> str:
    """target · artifact ω=… amp=… (every other recorded artifact parameter as name=value) · other keys."""
    d = dict(zip(keys, key))
    short = {f"{RESOLVED}omega": "ω", f"{RESOLVED}amplitude": "amp"}
    parts = [str(d["target"])] if "target" in d else []
    art = str(d.get("artifact", ""))
    for k in keys:
        if k.startswith(RESOLVED) and pd.notna(d[k]):
            art += f" {short.get(k, k[len(RESOLVED):])}={d[k]:g}" if isinstance(d[k], (int, float)) else f" {k[len(RESOLVED):]}={d[k]}"
    if art.strip():
        parts.append(art.strip())
    parts += [f"{k}={d[k]}" for k in keys if k not in ("target", "artifact") and not k.startswith(RESOLVED)]
    return " · ".join(parts)


def _groups(df: pd.DataFrame, keys: list[str]):
    if not keys:
        yield (), df
        return
    for key, g in df.groupby(keys, dropna=False, sort=True):
        yield (key if isinstance(key, tuple) else (key,)), g


def _ft_with_labels(trials: pd.DataFrame) -> pd.DataFrame:
    ft = finetune_trials(trials)
    return ft.assign(edit_label=edit_label(ft), edited=is_edited(ft))


def _agg_with_labels(trials: pd.DataFrame) -> pd.DataFrame:
    agg = aggregate(trials, metrics=["ood_auc", "iid_auc"])
    if agg.empty or "degradation" not in agg or "ood_auc_mean" not in agg:
        raise NotDrawable("needs finished fine-tuning trials with `ood_auc` and a `degradation` config key")
    return agg.assign(edit_label=edit_label(agg), edited=is_edited(agg))


def _auc_lines(ax, g: pd.DataFrame, metric: str, colors, styles, band=True, points: pd.DataFrame | None = None):
    """Mean line and ±std band per (source, edit) of the aggregate rows ``g``; ``points``: the
    finished trials behind them, drawn over the band (one small mark per fold)."""
    for (src, lab), line in g.groupby([SOURCE, "edit_label"], sort=True):
        line = line.sort_values("degradation").dropna(subset=[f"{metric}_mean"])
        if line.empty:
            continue
        x, m, s = line["degradation"].to_numpy(float), line[f"{metric}_mean"].to_numpy(float), line[f"{metric}_std"].to_numpy(float)
        c = colors.get(str(src), "k")
        ax.plot(x, m, linestyle=styles[lab], color=c, marker="o", ms=3.5, lw=1.6)
        if band:
            s = np.nan_to_num(s)
            ax.fill_between(x, m - s, m + s, color=c, alpha=0.15 if lab == "unedited" else 0.08, lw=0)
        if points is not None and metric in points:
            pts = points[(points[SOURCE] == src) & (points["edit_label"] == lab)]
            ax.scatter(pts["degradation"], pts[metric], s=10, color=c, alpha=0.75, lw=0,
                       marker="o" if lab == "unedited" else "^", zorder=4)
        pin_col = f"n_{metric}_pinned"
        if pin_col in line:
            pins = line[line[pin_col] > 0]
            ax.scatter(pins["degradation"], pins[f"{metric}_mean"], marker="x", color="k", s=30, zorder=5)


def _panel_points(trials: pd.DataFrame, g: pd.DataFrame, pkeys: list[str]) -> pd.DataFrame:
    """The finished fine-tuning trials of the panel whose aggregate rows are ``g`` (its fold points)."""
    ft = _ft_with_labels(trials)
    ft = ft[ft["status"] == "TERMINATED"] if "status" in ft else ft
    if not pkeys:
        return ft
    return ft.merge(g[pkeys].drop_duplicates(), on=pkeys)  # pandas matches NaN keys to NaN


def _order(pairs):
    return sorted(pairs, key=lambda sl: (str(sl[0]), sl[1] != "unedited", str(sl[1])))


def _legend_handles(pairs, colors, styles, pinned=False):
    pairs = _order(pairs)
    handles = [Line2D([], [], color=colors.get(str(s), "k"), linestyle=styles[lab], lw=1.6,
                      label=f"{s}" + ("" if lab == "unedited" else f" ({lab})")) for s, lab in pairs]
    if pinned:
        handles.append(Line2D([], [], color="k", marker="x", linestyle="", label="includes AUC pinned at 0/1"))
    return handles


def _finish(fig, title: str, handles, n_cols: int) -> None:
    """Title, legend and layout: legend beside narrow figures (one column of panels), else in a
    band of its own between the title and the panels."""
    h = fig.get_figheight()
    if n_cols <= 1:
        fig.suptitle(title)
        fig.tight_layout()
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        return
    ncol = min(len(handles), 5)
    legend_rows = int(np.ceil(len(handles) / ncol))
    top_in = 0.45 + 0.25 * legend_rows
    fig.tight_layout(rect=(0, 0, 1, 1 - top_in / h))
    fig.suptitle(title, y=1 - 0.05 / h, va="top")
    fig.legend(handles=handles, loc="upper center", ncol=ncol, bbox_to_anchor=(0.5, 1 - 0.38 / h), frameon=False)


def _grid(n_panels: int, rows_per_panel: int, max_cols: int = 3, w=3.6, h=2.6):
    ncols = min(max_cols, max(1, n_panels))
    nrows = int(np.ceil(n_panels / ncols)) * rows_per_panel
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 0.5, h * nrows + 0.6), squeeze=False)
    return fig, axes, ncols


# ----------------------------------------------------------------------------- Fig. 2


@figure("auc_vs_degradation")
def fig_auc_vs_degradation(trials: pd.DataFrame, out_dir: Path, name: str = "auc_vs_degradation") -> list[Path]:
    agg = _agg_with_labels(trials)
    colors, styles = source_colors(agg[SOURCE]), _edit_styles(agg["edit_label"])
    pkeys = [k for k in _panel_keys(trials) if k in agg]
    panels = list(_groups(agg, pkeys))
    fig, axes, ncols = _grid(len(panels), 2)
    for i, (key, g) in enumerate(panels):
        r, c = 2 * (i // ncols), i % ncols
        for row, metric, label in ((r, "ood_auc", "O.O.D. AUC"), (r + 1, "iid_auc", "I.I.D. AUC")):
            ax = axes[row, c]
            if f"{metric}_mean" in g:
                _auc_lines(ax, g, metric, colors, styles, points=_panel_points(trials, g, pkeys))
            ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(label)
            ax.grid(alpha=0.25)
            if row == r:
                ax.set_title(_panel_title(key, pkeys))
            else:
                ax.set_xlabel("degradation (fraction of positives with artifact)")
    for j in range(len(panels), axes.shape[1] * (axes.shape[0] // 2)):
        axes[2 * (j // ncols), j % ncols].axis("off")
        axes[2 * (j // ncols) + 1, j % ncols].axis("off")
    pairs = sorted(agg.groupby([SOURCE, "edit_label"]).groups)
    has_pin = any(agg.get(f"n_{m}_pinned", pd.Series(dtype=float)).fillna(0).gt(0).any() for m in ("ood_auc", "iid_auc"))
    title = "AUC vs degradation: O.O.D. top, I.I.D. bottom\n(line: mean over folds, band: ± std, marks: each fold)"
    _finish(fig, title, _legend_handles(pairs, colors, styles, has_pin), ncols)
    return _save(fig, out_dir, name)


# ----------------------------------------------------------------------------- Fig. 3 top


def _unit_max(p: np.ndarray) -> np.ndarray:
    return p / p.max()


def _no_dc(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ω̄, priority) without the DC bin, scaled to unit max over the remaining bins: the DC bin
    (the image mean) holds most of a priority's mass and would flatten every other bin."""
    w = frequency_axis(len(p))[1:]
    q = np.asarray(p, float)[1:]
    return w, q / q.max()


def _mean_psd(rows: pd.Series) -> np.ndarray | None:
    vecs = [v for v in rows if isinstance(v, np.ndarray) and v.ndim == 1 and np.isfinite(v).all() and v.sum() > 0]
    if not vecs or len({len(v) for v in vecs}) != 1:
        return None
    m = np.mean([v / v.sum() for v in vecs], axis=0)
    return m / m.sum()


def _priority_panels(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(title, one row per network with ``psd``, SOURCE, edit_label)]: the pretrained models (as
    analysis/units.py counts them, on the probe set where trials report one) and the fine-tuned
    networks at the lowest degradation (d = 0 twins once)."""
    from .units import distinct_models, finished_finetunes, is_vec, pretrained_models

    panels = []
    pre = pretrained_models(trials)
    if not pre.empty:
        on = "on the shared probe set" if pre["priority"].iloc[0] == "psd_probe" else "on its own source"
        if pre["probe_set"].nunique() > 1:
            on = f"on {pre['probe_set'].nunique()} probe sets"
        n = pre["backbone"].nunique()
        panels.append((f"pretrained: {n} model{'s' * (n != 1)}, {on}", pre))
    ft = finished_finetunes(trials)
    if "psd_finetuned" in ft and ft["psd_finetuned"].map(is_vec).any():
        ft = ft[ft["psd_finetuned"].map(is_vec)]
        level = float(ft["degradation"].min()) if "degradation" in ft and ft["degradation"].notna().any() else None
        if level is not None:
            ft = ft[ft["degradation"] == level]
        nets = distinct_models(ft).assign(edit_label=lambda d: edit_label(d)).rename(columns={"psd_finetuned": "psd"})
        n = len(nets)
        at = f", degradation {level:g}" if level is not None else ""
        panels.append((f"fine-tuned: {n} network{'s' * (n != 1)}{at}, on the probe set", nets))
    return panels


@figure("priorities")
def fig_priorities(trials: pd.DataFrame, out_dir: Path, name: str = "priorities") -> list[Path]:
    """One thin line per network (pretrained model / clean fine-tuned network), DC bin left out,
    log y; arrows between the group means of unedited and edited sources."""
    panels = _priority_panels(trials)
    if not panels:
        raise NotDrawable("needs `psd_probe`/`psd_pretrained` or `psd_finetuned` vectors in finished trials")
    sources = pd.concat([df[SOURCE] for _, df in panels])
    colors, styles = source_colors(sources), _edit_styles(pd.concat([df["edit_label"] for _, df in panels]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 0.4, 3.7), squeeze=False, sharey=True)
    pairs = []
    for ax, (title, df) in zip(axes[0], panels):
        for _, row in df.iterrows():
            w, q = _no_dc(row["psd"])
            ax.plot(w, q, color=colors.get(str(row[SOURCE]), "k"), ls=styles[row["edit_label"]], lw=1.0, alpha=0.8)
            if (row[SOURCE], row["edit_label"]) not in pairs:
                pairs.append((row[SOURCE], row["edit_label"]))
        means = {key: _mean_psd(g["psd"]) for key, g in df.groupby([SOURCE, "edit_label"], sort=True)}
        _edit_arrows(ax, {k: m for k, m in means.items() if m is not None}, colors)
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_title(title + "\n(one line each)", fontsize=9)
        ax.set_xlabel("normalised radial frequency ω̄ (DC bin left out)")
        ax.grid(alpha=0.25)
    axes[0, 0].set_ylabel("learning priority (unit max without DC, log)")
    axes[0, 0].text(0.99, 1.6, "centroid (no DC)", fontsize=7, ha="right", va="bottom", color="0.4",
                    transform=axes[0, 0].get_yaxis_transform())
    fig.legend(handles=_legend_handles(pairs, colors, styles), loc="upper center", ncol=min(4, len(pairs)),
               bbox_to_anchor=(0.5, 1.02), frameon=False)
    fig.suptitle("Learning priorities, one line per network; arrows: mean unedited → mean edited", y=1.09)
    fig.tight_layout()
    return _save(fig, out_dir, name)


def _edit_arrows(ax, means: dict, colors) -> None:
    """Arrows from the unedited to each edited group mean of a source: vertical at the bin where
    the edit changes the curve most, and along the top between the centroids (DC left out)."""
    for (src, lab), m in means.items():
        c = summarize(m, exclude_dc=True)["centroid"]
        ax.plot([c], [1.6], marker="|" if lab == "unedited" else "o", ms=8 if lab == "unedited" else 3,
                color=colors.get(str(src), "k"), mfc="none" if lab != "unedited" else None)
        base = means.get((src, "unedited"))
        if lab == "unedited" or base is None:
            continue
        w, a = _no_dc(base)
        _, b = _no_dc(m)
        k = int(np.argmax(np.abs(np.log(b + 1e-12) - np.log(a + 1e-12))))
        color = colors.get(str(src), "k")
        ax.annotate("", xy=(w[k], b[k]), xytext=(w[k], a[k]), arrowprops=dict(arrowstyle="->", color=color, lw=1.4))
        c0 = summarize(base, exclude_dc=True)["centroid"]
        ax.annotate("", xy=(c, 1.6), xytext=(c0, 1.6), arrowprops=dict(arrowstyle="->", color=color, lw=1.4))


# ----------------------------------------------------------------------------- Fig. 3 heat maps


@figure("priority_heatmaps")
def fig_priority_heatmaps(trials: pd.DataFrame, out_dir: Path, name: str = "priority_heatmaps") -> list[Path]:
    ft = _ft_with_labels(trials)
    ft = ft[ft["status"] == "TERMINATED"] if "status" in ft else ft
    if "psd_finetuned" not in ft or "degradation" not in ft or not ft["psd_finetuned"].map(lambda v: isinstance(v, np.ndarray)).any():
        raise NotDrawable("needs `psd_finetuned` vectors and a `degradation` config key")
    pkeys = [k for k in _panel_keys(trials) if k in ft]
    edits = ["unedited"] + sorted(set(ft["edit_label"]) - {"unedited"})
    columns = [(pk, src) for pk, g in _groups(ft, pkeys) for src in sorted(g[SOURCE].dropna().unique())]
    mats = {}
    for pk, g in _groups(ft, pkeys):
        for (src, lab), h in g.groupby([SOURCE, "edit_label"]):
            levels = sorted(h["degradation"].unique())
            rows = [_mean_psd(h.loc[h["degradation"] == d, "psd_finetuned"]) for d in levels]
            if all(r is not None for r in rows) and len({len(r) for r in rows}) == 1:
                mats[(pk, src, lab)] = (levels, np.stack([_unit_max(r) for r in rows]))
    if not mats:
        raise NotDrawable("no complete fine-tuned priority vectors to draw")
    # Artifact frequency per panel: the config's ω_a, else the peak of the artifact's signature.
    artifact_freq = {}
    for pk, g in _groups(ft, pkeys):
        aw = dict(zip(pkeys, pk)).get(f"{RESOLVED}omega")
        if (aw is None or pd.isna(aw)) and "psd_artifact" in g:
            sig = _mean_psd(g["psd_artifact"])
            aw = float(frequency_axis(len(sig))[int(np.argmax(sig[1:])) + 1]) if sig is not None else None
        artifact_freq[pk] = aw
    vmin = max(min(m[m > 0].min() for _, m in mats.values()), 1e-4)
    norm = LogNorm(vmin=vmin, vmax=1.0)
    fig, axes = plt.subplots(len(edits), len(columns), figsize=(3.3 * len(columns) + 1.2, 2.3 * len(edits) + 0.6),
                             squeeze=False)
    im = None
    for j, (pk, src) in enumerate(columns):
        for i, lab in enumerate(edits):
            ax = axes[i, j]
            entry = mats.get((pk, src, lab))
            if entry is None:
                ax.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax.transAxes, color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                levels, m = entry
                im = ax.imshow(m, aspect="auto", origin="lower", norm=norm, cmap="magma",
                               extent=(-0.5 / (m.shape[1] - 1), 1 + 0.5 / (m.shape[1] - 1), -0.5, len(levels) - 0.5))
                ax.set_yticks(range(len(levels)), [f"{d:g}" for d in levels])
                if i == len(edits) - 1:
                    ax.set_xlabel("normalised radial frequency ω̄")
                else:
                    ax.tick_params(labelbottom=False)
                aw = artifact_freq.get(pk)
                if aw is not None and pd.notna(aw):
                    ax.axvline(float(aw), color="c", lw=0.8, ls="--")
            if j == 0:
                ax.set_ylabel(f"{'original' if lab == 'unedited' else 'edited: ' + lab}\ndegradation")
            if i == 0:
                title = _panel_title(pk, pkeys)
                ax.set_title(f"{src}" + (f"\n{title.replace(' · ', chr(10))}" if title and len(columns) > 2 else ""),
                             color=source_colors(ft[SOURCE]).get(str(src), "k"), fontsize=9)
    fig.subplots_adjust(hspace=0.15, wspace=0.25)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.85, label="fine-tuned priority (unit max, log)")
    fig.suptitle("Fine-tuned learning priority vs degradation (dashed: artifact frequency)",
                 y=1.0 + (0.45 if len(columns) > 2 else 0.2) / fig.get_figheight())
    return _save(fig, out_dir, name)


# ----------------------------------------------------------------------------- Fig. 4


@figure("editing_effect")
def fig_editing_effect(trials: pd.DataFrame, out_dir: Path, name: str = "editing_effect") -> list[Path]:
    agg = _agg_with_labels(trials)
    if not agg["edited"].any() or agg["edited"].all():
        raise NotDrawable("needs fine-tuning trials both with and without source editing")
    colors, styles = source_colors(agg[SOURCE]), _edit_styles(agg["edit_label"])  # the arms' styles of every figure
    pkeys = [k for k in _panel_keys(trials) if k in agg]
    # One panel per source (within each target/artifact), so solid and dashed share a colour.
    panels = [((*key, src), g[g[SOURCE] == src]) for key, g in _groups(agg, pkeys)
              for src in sorted(g[SOURCE].dropna().unique())]
    fig, axes, ncols = _grid(len(panels), 1, max_cols=4, w=3.4, h=2.9)
    for i, (key, g) in enumerate(panels):
        ax = axes[i // ncols, i % ncols]
        _auc_lines(ax, g, "ood_auc", colors, styles, points=_panel_points(trials, g, pkeys))
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.set_ylim(-0.02, 1.02)
        sub = _panel_title(key[:-1], pkeys)
        ax.set_title(f"{key[-1]}" + (f"\n{sub}" if sub else ""), color=colors.get(str(key[-1]), "k"))
        ax.set_xlabel("degradation")
        if i % ncols == 0:
            ax.set_ylabel("O.O.D. AUC")
        ax.grid(alpha=0.25)
    for j in range(len(panels), axes.size):
        axes.flat[j].axis("off")
    pairs = sorted(agg.groupby([SOURCE, "edit_label"]).groups)
    has_pin = agg.get("n_ood_auc_pinned", pd.Series(dtype=float)).fillna(0).gt(0).any()
    title = "O.O.D. AUC with (dashed) and without (solid) source editing, mean ± std over folds (marks: folds)"
    _finish(fig, title if ncols > 1 else title.replace(", mean", ",\nmean"),
            _legend_handles(pairs, colors, styles, has_pin), ncols)
    return _save(fig, out_dir, name)


# ----------------------------------------------------------------------------- alignment vs drop


def _f4_panel(ax, g: pd.DataFrame, colors: dict, markers: dict, title: str, saturated: bool) -> None:
    """One stratum: a point per pretrained model (folds averaged), siblings of one seed joined."""
    for (src, lab), m in g.groupby([SOURCE, "edit_label"]):
        ax.scatter(m["align_pretrained"], m["shortcut_cost"], color=colors.get(str(src), "k"), marker=markers[lab],
                   s=34, alpha=0.35 if saturated else 0.85, edgecolor="white", lw=0.4)
    for _, pair in g.groupby([SOURCE, "seed"]):
        if pair["edit_label"].nunique() > 1:  # the edit contrast: edited − unedited sibling of one seed
            base = pair[pair["edit_label"] == "unedited"]
            for _, e in pair[pair["edit_label"] != "unedited"].iterrows():
                for _, u in base.iterrows():
                    ax.annotate("", (e["align_pretrained"], e["shortcut_cost"]), (u["align_pretrained"], u["shortcut_cost"]),
                                arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 0.7})
    ax.set_title(title, fontsize=7.5)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=7)


def _stratum_title(stratum: str) -> str:
    """A panel title for an F4 stratum ``"k=v · k=v ..."``: target and artifact by value, the set
    parameters as ``name=value`` (unset ones left out), the degradation last as ``d=``, so that
    panels differing only in a parameter or in d never look alike."""
    parts = dict(p.split("=", 1) for p in stratum.split(" · ") if "=" in p)
    head = [parts.pop(k) for k in ("target", "artifact") if k in parts]
    d = parts.pop("degradation", None)
    params = [f"{k.rsplit('/', 1)[-1]}={_short_number(v)}" for k, v in parts.items() if v not in ("None", "nan", "")]
    params += [] if d is None else [f"d={_short_number(d)}"]
    rows: list[str] = []
    for item in params:  # rows of at most ~40 characters fit a panel's width
        if rows and len(rows[-1]) + len(item) + 3 <= 40:
            rows[-1] += " · " + item
        else:
            rows.append(item)
    return "\n".join([" · ".join(head), *rows])


def _short_number(text: str) -> str:
    """``"20000000.0"`` -> ``"2e+07"``, ``"0.5"`` -> ``"0.5"``; text that is no number unchanged."""
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


@figure("alignment_vs_drop")
def fig_alignment_vs_drop(trials: pd.DataFrame, out_dir: Path, name: str = "alignment_vs_drop") -> list[Path]:
    """F4 as its test sees it: one panel per stratum (target × artifact × parameters × d), a point per
    pretrained model (folds averaged) at its alignment and shortcut cost (I.I.D. − O.O.D. AUC of the
    same network); the title gives the within-(source × edit arm) ρ the verdict averages; arrows go
    from an unedited to its edited sibling of the same seed (the edit contrast); saturated strata,
    left out of the test, are faded."""
    from .findings import _saturated_strata, f4_per_model, f4_table  # local: findings imports figures' siblings only
    from .stats import block_permutation_spearman

    tab = f4_table(trials)
    if tab.empty:
        raise NotDrawable("needs finished fine-tuning trials at degradation > 0 with `ood_auc`")
    per = f4_per_model(tab, "align_pretrained")
    if per.empty:
        raise NotDrawable("needs priority vectors and the artifact's weight, frequency or signature to compute alignment")
    per = per.reset_index()
    saturated = set(_saturated_strata(f4_per_model(tab, "align_pretrained")))
    strata = sorted(per["stratum"].unique())
    colors = source_colors(per[SOURCE])
    markers = dict(zip(["unedited"] + sorted(set(per["edit_label"]) - {"unedited"}), ["o", "^", "s", "D", "v", "P"] * 3))
    cols = min(4, len(strata))
    rows = -(-len(strata) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 1.6, 2.8 * rows), squeeze=False)
    for ax, st in zip(axes.ravel(), strata):
        g = per[per["stratum"] == st]
        r = block_permutation_spearman(g[["align_pretrained"]].to_numpy(), g[["shortcut_cost"]].to_numpy(),
                                       g["block"].to_numpy(), np.random.default_rng(0))
        rho = "saturated: left out" if st in saturated else (
            f"within-source ρ = {r['rho']:+.2f}" if np.isfinite(r["rho"]) else "no within-source ranking")
        _f4_panel(ax, g, colors, markers, f"{_stratum_title(st)}\n{rho}", st in saturated)
    for ax in axes.ravel()[len(strata):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("shortcut cost (I.I.D. − O.O.D. AUC)", fontsize=7.5)
    for ax in axes[-1]:
        ax.set_xlabel(f"alignment ({tab['align_method'].iloc[0] or 'n/a'})", fontsize=7)
    handles = [Line2D([], [], color=c, marker="o", ls="", label=s) for s, c in colors.items()]
    handles += [Line2D([], [], color="0.4", marker=m, ls="", label=lab) for lab, m in markers.items() if lab in set(per["edit_label"])]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle("F4 per stratum: alignment vs shortcut cost, one point per pretrained model; arrows: unedited → "
                 "edited sibling of one seed", y=1.02, fontsize=9)
    fig.tight_layout()
    return _save(fig, out_dir, name)


# ----------------------------------------------------------------------------- all


def draw_all(trials: pd.DataFrame, out_dir: str | Path) -> dict[str, list[Path] | str]:
    """Draw every figure; value = written paths, or the reason (str) a figure was not drawn."""
    out_dir = Path(out_dir)
    out: dict[str, list[Path] | str] = {}
    for name, fn in FIGURES.items():
        try:
            out[name] = fn(trials, out_dir)
        except NotDrawable as e:
            out[name] = f"not drawn: {e}"
        except Exception as e:  # never lose the whole report to one figure
            plt.close("all")
            out[name] = f"not drawn: failed with {type(e).__name__}: {e}"
    return out
