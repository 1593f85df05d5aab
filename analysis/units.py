"""Units of replication: which trials are the same trained model, and which are independent.

Three identities, all read from a trial's training inputs (never from equal numbers):

* ``backbone`` — the pretrained model: the backbone store's content hash ``pretrain_key`` where
  the trial reported one, else its ``backbone`` and ``shared`` keys (:data:`BACKBONE_INPUTS`, from
  the roles of :class:`~spectral_ray.config.TrialConfig`'s fields).
* ``unit`` — the fine-tune a finding's AUC effects are replicated over, the *(model, fold)
  fine-tune*: backbone + target and its parameters + fold + fine-tuning seed + recipe. Trials of
  one unit differ only in the shortcut (artifact and degradation).
* ``model`` — one trained network: the unit plus the degradation and, at degradation > 0, the
  artifact and its parameters. At degradation 0 no training image carries the artifact, so trials
  that differ only in the artifact are the same network evaluated on different O.O.D. test sets:
  *d = 0 twins*, one model (:func:`distinct_models` keeps one of them).

Columns are included when the table has them; a key the table lacks cannot split anything.
"""

from __future__ import annotations

from typing import get_origin

import numpy as np
import pandas as pd

from spectral_ray.config import TrialConfig, fields_with_role

from .aggregate import RESOLVED, SOURCE, edit_label, finetune_trials, is_edited, with_identity

__all__ = ["BACKBONE_INPUTS", "EDIT_INPUTS", "columns", "FINETUNE_INPUTS", "SHORTCUT_INPUTS", "PROBE", "PROBE_KEYS", "OWN", "identify", "distinct_models",
           "finished_finetunes", "present", "seeds_tied", "is_vec", "priority_column", "probe_sets", "pretrained_models"]


def columns(keys) -> list[str]:
    """The analysis columns of TrialConfig ``keys``: a mapping key (``source_params``) as its
    flattened prefix (``source_params/``); ``source`` as the reported ``source_label`` (published
    weights included); ``finetune_seed``/``artifact_seed`` as the seed the trial ran with."""
    renamed = {"source": SOURCE, "finetune_seed": "finetune_seed_used", "artifact_seed": "artifact_seed_used"}
    dicts = {k for k, f in TrialConfig.model_fields.items() if get_origin(f.annotation) is dict}
    return [renamed.get(k, k + "/" if k in dicts else k) for k in keys]


# Everything below is derived from the roles TrialConfig's fields declare (spectral_ray.config.ROLES).
# Training inputs of the pretrained backbone (used when a trial has no ``pretrain_key``), with the
# seed a random-init backbone is drawn with; the edit's own keys are blanked for unedited trials.
BACKBONE_INPUTS = columns(fields_with_role("backbone", "shared")) + ["edit_label", "random_init_seed"]
EDIT_INPUTS = [c for c in columns(fields_with_role("backbone")) if c.startswith("edit")]
# What the fine-tune adds (besides the backbone): its data, split, seed and recipe, on the
# backbone's architecture and image grid.
FINETUNE_INPUTS = columns(fields_with_role("finetune", "shared")) + ["model"]
# The shortcut: enters training only at degradation > 0 (the degradation itself is the model's).
SHORTCUT_INPUTS = [c for c in columns(fields_with_role("shortcut")) if c != "degradation"] + [RESOLVED]


def present(df: pd.DataFrame, names: list[str]) -> list[str]:
    """The columns of ``df`` named in ``names`` (a name ending in ``/`` stands for its prefix)."""
    out = []
    for n in names:
        cols = sorted(c for c in df.columns if c.startswith(n)) if n.endswith("/") else ([n] if n in df else [])
        out += [c for c in cols if c not in out]
    return out


def _key(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """One string per row identifying its values in ``cols`` (NaN/None read as one 'unset')."""
    if not cols:
        return pd.Series("", index=df.index, dtype=object)

    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "∅"
        if isinstance(v, np.ndarray):
            return "[" + ",".join(f"{x:.6g}" for x in v) + "]"
        return repr(float(v)) if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else repr(v)

    return pd.Series(["|".join(cell(v) for v in row) for row in df[cols].itertuples(index=False)],
                     index=df.index, dtype=object)


def _finetune_seed_used(ft: pd.DataFrame) -> pd.Series:
    """The fine-tuning seed each trial ran with: ``finetune_seed_used`` where the trial reported it
    (since the seeds are drawn from the backbone's identity), else the old rule — the config's
    ``finetune_seed``, or the pretraining ``seed`` when unset — for tables from before."""
    nan = pd.Series(np.nan, index=ft.index)
    own = ft["finetune_seed"] if "finetune_seed" in ft else nan
    derived = own.where(own.notna(), ft["seed"] if "seed" in ft else nan)
    reported = ft["finetune_seed_used"] if "finetune_seed_used" in ft else nan
    return reported.where(reported.notna(), derived)


def seeds_tied(ft: pd.DataFrame) -> bool:
    """Do backbones that share a pretraining seed share the artifact assignment (the old seeding,
    or an ``artifact_seed`` set by hand)? True unless every trial reported an ``artifact_seed_used``
    and no two backbones of one pretraining seed report the same one. ``ft``: :func:`identify`'s."""
    if "artifact_seed_used" not in ft or ft["artifact_seed_used"].isna().any():
        return True
    if "seed" not in ft:
        return False
    per = ft.groupby("seed")[["backbone", "artifact_seed_used"]].nunique()
    return bool((per["artifact_seed_used"] < per["backbone"]).any())


def identify(ft: pd.DataFrame) -> pd.DataFrame:
    """``ft`` (fine-tuning trials) with ``edited``, ``edit_label`` and the identity columns
    ``backbone``, ``unit``, ``model`` (see the module docstring), ``finetune`` (the unit without its
    backbone), ``counterpart`` (that without the fine-tuning seed: how an edited unit finds its
    unedited counterpart, since seeds are drawn per backbone) and ``shortcut`` (the artifact
    and its parameters); strings."""
    ft = ft.assign(edited=is_edited(ft), edit_label=edit_label(ft))
    if "seed" in ft or "finetune_seed" in ft or "finetune_seed_used" in ft:
        used = _finetune_seed_used(ft)
        # a random-init backbone is drawn with the fine-tuning seed (experiment.run_finetune)
        random_init = (ft[SOURCE] == "none") if SOURCE in ft else pd.Series(False, index=ft.index)
        ft = ft.assign(finetune_seed_used=used, random_init_seed=used.where(random_init))
    edit_cols = present(ft, EDIT_INPUTS)
    blanked = ft.assign(**{c: ft[c].astype(object).where(ft["edited"], None) for c in edit_cols})
    described = _key(blanked, present(ft, BACKBONE_INPUTS))
    if "pretrain_key" in ft:
        hashed = ft["pretrain_key"].map(lambda v: isinstance(v, str) and bool(v))
        backbone = ("store:" + ft["pretrain_key"].astype(str)).where(hashed, "config:" + described)
    else:
        backbone = "config:" + described
    finetune = _key(ft, present(ft, FINETUNE_INPUTS))
    # an edited unit's unedited counterpart: same target, split and recipe; the fine-tuning seed is
    # drawn per backbone since findings round 2, so it cannot be part of the match
    counterpart = _key(ft, [c for c in present(ft, FINETUNE_INPUTS) if c != "finetune_seed_used"])
    unit = backbone + "#" + finetune
    d = pd.to_numeric(ft["degradation"], errors="coerce") if "degradation" in ft else pd.Series(0.0, index=ft.index)
    shortcut = _key(ft, present(ft, SHORTCUT_INPUTS))
    model = unit + "#d=" + d.map(lambda x: f"{x:g}") + ("#" + shortcut).where(d > 0, "")
    out = ft.assign(backbone=backbone, finetune=finetune, counterpart=counterpart, unit=unit, shortcut=shortcut,
                    model=model)
    out.attrs = {}  # pandas deep-copies attrs on every later subset; the identities replace them
    return out


def finished_finetunes(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished fine-tuning trials with their identities (:func:`identify`)."""
    return identify(finetune_trials(trials, finished=True))


def distinct_models(ft: pd.DataFrame) -> pd.DataFrame:
    """One row per trained network: d = 0 twins collapse to their first trial (``ft`` must come
    from :func:`identify`). Use it for anything measured on the network alone (priorities, I.I.D.
    AUC); O.O.D. AUC at d = 0 differs between twins (each is scored on its own artifact)."""
    return ft.drop_duplicates("model", keep="first")


# ----------------------------------------------------------------------------- pretrained models

PROBE = "psd_probe"       # the backbone on the target's shared probe set (every trial of a backbone: one vector)
OWN = "psd_pretrained"    # the backbone on its own (possibly edited) source, from the store
PRIORITY_TEXT = {PROBE: "the shared probe set (`psd_probe`: the target's clean test images picked and a fresh "
                        "head drawn with fixed seeds, the same for every trial of a backbone)",
                 OWN: "each backbone's own source (`psd_pretrained`; no probe set in this experiment)"}
# What makes a probe set: the target's images (psd_images of them, picked with a fixed seed).
PROBE_KEYS = ([k for k in fields_with_role("finetune") if k.startswith("target")]
              + list(fields_with_role("shared", "measurement")))
PROBE_INPUTS = columns(PROBE_KEYS)


def is_vec(v) -> bool:
    """A usable spectrum: a finite 1-D array of > 1 bins with positive sum."""
    return isinstance(v, np.ndarray) and v.ndim == 1 and v.size > 1 and bool(np.isfinite(v).all()) and v.sum() > 0


def priority_column(trials: pd.DataFrame) -> str:
    """The pretrained priority the findings compare: ``psd_probe`` where any finished trial
    reported it, else ``psd_pretrained``."""
    ft = finetune_trials(trials, finished=True)
    return PROBE if PROBE in ft and ft[PROBE].map(is_vec).any() else OWN


def probe_sets(df: pd.DataFrame, column: str) -> pd.Series:
    """The image set each row's ``column`` priority was measured on (one string per row)."""
    if column != PROBE:
        return pd.Series("own source", index=df.index, dtype=object)
    return "target " + _key(df, present(df, PROBE_INPUTS))


def pretrained_models(trials: pd.DataFrame, column: str | None = None) -> pd.DataFrame:
    """One row per pretrained model and probe set, read from finished trials (fine-tuning and
    ``pretrain`` trials) that report the priority ``column`` (default :func:`priority_column`).

    Columns: ``backbone``, ``probe_set``, source_label, edit, edit_strength, seed (where present),
    ``edited``, ``edit_label``, ``psd`` (unit-sum mean over the model's trials; they report one
    vector, ``psd_spread`` = the largest TV distance of a trial's vector from it), ``centroid``,
    ``centroid_nodc``, ``n_trials``, ``priority`` (the column)."""
    from spectral_ray.spectrum import summarize

    column = column or priority_column(trials)
    t = with_identity(trials)
    if column not in t or "status" not in t:
        return pd.DataFrame()
    ok = t[(t["status"] == "TERMINATED") & t[column].map(is_vec)]
    if column == OWN and "psd_pretrained_on" in ok:  # a backbone without source data was measured on the target
        ok = ok[ok["psd_pretrained_on"].isna() | (ok["psd_pretrained_on"] == "source")]
    if SOURCE not in ok or ok.empty:
        return pd.DataFrame()
    ok = identify(ok).assign(probe_set=probe_sets(ok, column))
    rows = []
    for (backbone, probe), g in ok.groupby(["backbone", "probe_set"], sort=True):
        vecs = np.stack([v / v.sum() for v in g[column]])
        psd = vecs.mean(0)
        first = g.iloc[0]
        rows.append({"backbone": backbone, "probe_set": probe,
                     **{k: first[k] for k in (SOURCE, "edit", "edit_strength", "seed") if k in g},
                     "edited": bool(first["edited"]), "edit_label": first["edit_label"], "psd": psd,
                     "psd_spread": max(0.5 * float(np.abs(v - psd).sum()) for v in vecs),
                     "centroid": summarize(psd)["centroid"], "centroid_nodc": summarize(psd, exclude_dc=True)["centroid"],
                     "n_trials": len(g), "priority": column})
    return pd.DataFrame(rows)
