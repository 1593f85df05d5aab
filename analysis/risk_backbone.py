"""The backbone ``spectral-ray risk`` assesses, measured as a trial of it in the experiment would
measure it (docs/RISK.md): named by its store key, or made from its pretraining keys as a sweep's
trial makes it (:func:`spectral_ray.experiment.get_backbone`), then measured on each matching
stratum's probe set by :func:`spectral_ray.experiment.start_trial` (the steps ``run_finetune``
takes before fine-tuning) and assessed there (:func:`analysis.risk.assess`).

Errors are :class:`~analysis.risk.RiskError` (what was asked does not fit the store or the
experiment); invalid TrialConfig keys surface through the caller's ``make_config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import risk
from .risk import RiskError
from .units import PROBE_KEYS

__all__ = ["load", "trial_size", "resolve_artifact", "Backbone", "store_backbone", "made_backbone", "backbone_keys",
           "settable_keys", "protocol_keys", "with_sets", "store_root_for", "assess_backbone", "stratum_labels",
           "choose_target", "header"]


def load(exp: str, target: str | None, family: str, params: dict, degradation: float | None):
    """(trials, F4's basis, the strata matching target (default: the experiment's only one), artifact
    and degradation) of the experiment folder ``exp``. RiskError naming what the experiment has
    (or that the folder holds no trials)."""
    from .collect import NoTrialsError, collect

    try:
        trials = collect(exp).trials
        basis = risk.load_basis(trials)
        matched = risk.match_strata(basis, target=choose_target(basis, target), family=family, params=params,
                                    degradation=degradation)
    except NoTrialsError as e:
        raise RiskError(str(e)) from None
    except (RiskError, FileNotFoundError) as e:
        raise RiskError(f"{exp}: {e}") from None
    return trials, basis, matched


def trial_size(basis: risk.Basis, matched: pd.DataFrame) -> int:
    """The image size the experiment's trials ran at (recorded by every launcher run; older ones ran
    at TrialConfig's default)."""
    from spectral_ray.config import TrialConfig

    return risk.trial_config(risk.representative(basis, matched["stratum"].iloc[0])).get(
        "size", TrialConfig.model_fields["size"].default)


def resolve_artifact(keys: dict, flag: Callable[[str], str] = str) -> tuple[str, dict, object]:
    """(family, ``keys``, the Artifact at its resolved parameters) for the TrialConfig artifact keys
    ``keys`` (``artifact``, ``artifact_omega``, ``artifact_amplitude``, ``artifact_params``).
    RiskError for an unknown family or parameter, or a key the family ignores (named by ``flag``)."""
    from spectral_ray.artifacts import FAMILIES, get_artifact

    try:
        family = FAMILIES.family(keys["artifact"])
        artifact = get_artifact(keys["artifact"], **FAMILIES.trial_kwargs(keys["artifact"], keys,
                                                                          keys["artifact_params"]))
    except ValueError as e:
        raise RiskError(f"{flag('artifact')}: {e}") from None
    ignored = [flag(k) for k in FAMILIES.ignored_keys(family.name) if keys.get(k) is not None]
    if ignored:
        raise RiskError(f"{flag('artifact')} {family.name} has no parameter set by {', '.join(ignored)}; its "
                        "parameters: " + ", ".join(family.params))
    return family.name, keys, artifact


@dataclass
class Backbone:
    """The backbone to measure: its checkpoint and store meta (None/{} for a random init), the
    backbone id the experiment's tables use (``store:<key>``), the TrialConfig keys that make it."""

    ckpt: Path | None
    meta: dict
    id: str | None
    keys: dict
    text: str
    notes: list[str] = field(default_factory=list)


def store_root_for(store_root: str | None, trials: pd.DataFrame) -> tuple[Path, list[str]]:
    """``store_root``, else the store the experiment's trials recorded (if it is here), else the
    default; with a note when the recorded one is not on this machine."""
    from spectral_ray.store import store_root as default_root

    if store_root:
        return Path(store_root).expanduser(), []
    recorded = sorted({s for s in trials.get("store", []) if isinstance(s, str) and s})
    here = [s for s in recorded if Path(s).is_dir()]
    if here:
        return Path(here[0]), []
    default = default_root()
    note = [f"the experiment's store ({recorded[0]}) is not on this machine; using {default}"] if recorded else []
    return default, note


def _edit_text(family, strength) -> str:
    from spectral_ray.editing import is_edit

    return f"edit {family} s={strength:g}" if is_edit(family or "none", strength or 0.0) else "unedited"


def _describe(meta: dict) -> str:
    cfg = meta.get("config") or {}
    edit = _edit_text(cfg.get("edit_family"), cfg.get("edit_strength"))
    init = f", from {cfg['init']}" if cfg.get("init") else ""
    size = (cfg.get("source_params") or {}).get("size")
    return f"{cfg.get('source')}, {edit}, {cfg.get('model')}, seed {cfg.get('seed')}{init}, {size} px"


def store_backbone(key: str, root: Path) -> Backbone:
    """The backbone of the store ``root`` whose key starts with ``key``; RiskError listing the
    store's backbones when none or several match."""
    from spectral_ray.store import load_meta, stats

    entries = stats(root)["entries"]
    hits = [e for e in entries if e["key"].startswith(key.lower())]
    if len(hits) == 1:
        ckpt, meta = Path(hits[0]["path"]), load_meta(hits[0]["path"])
        cfg = meta.get("config") or {}
        keys = {"model": cfg.get("model"), "seed": cfg.get("seed", 0)}
        return Backbone(ckpt, meta, f"store:{meta['key']}", keys, f"store:{meta['key'][:16]} ({_describe(meta)})")
    shown = hits or entries
    listing = "; ".join(f"{e['key'][:16]} ({e['source']}, {_edit_text(e['edit_family'], e['edit_strength'])}, "
                        f"{e['model']}, seed {e['seed']})" for e in shown[:20]) + (" …" if len(shown) > 20 else "")
    if hits:
        raise RiskError(f"--store {key!r} matches {len(hits)} backbones in {root}; give more of the key: {listing}")
    raise RiskError(f"--store: no backbone with key {key!r} in the store {root}; "
                    + (f"its {len(entries)} backbones: {listing}" if entries else "the store is empty")
                    + " (--store-root DIR names another store)")


def settable_keys() -> tuple[str, ...]:
    """TrialConfig keys that make the backbone (their role, config.ROLES): the ones `--set` may
    change (the rest is the experiment's protocol: target, probe set, size)."""
    from spectral_ray.config import fields_with_role

    return fields_with_role("backbone")


def protocol_keys() -> tuple[str, ...]:
    """Keys of the experiment's trial that the probe measurement keeps (its target, probe set, split,
    threads), and its model and pretraining recipe as the backbone's defaults."""
    from spectral_ray.config import fields_with_role

    return fields_with_role("finetune", "shared", "measurement", "execution") + ("model", "pretrain")


def backbone_keys(source: str | None, weights: str | None, seed: int | None, edits: dict, protocol: dict) -> dict:
    """The TrialConfig keys of a backbone to make: its source (``none`` by default), weights, seed
    (0 by default), the given edit keys and, for the experiment's own source, its pretraining data
    (``source_n``, ``source_params`` of ``protocol``)."""
    keys = {"source": source or "none", "source_weights": weights, "seed": seed or 0}
    keys.update({k: v for k, v in edits.items() if v is not None})
    if protocol.get("source") == keys["source"]:  # the experiment's pretraining data of this source
        keys.update({k: protocol[k] for k in ("source_n", "source_params") if k in protocol})
    return keys


def with_sets(keys: dict, sets: dict) -> dict:
    """``keys`` with the user's ``--set`` values: backbone keys (:func:`settable_keys`), dotted ones
    into ``pretrain``, ``source_params`` or ``edit_params``; RiskError for any other key."""
    out, allowed = dict(keys), settable_keys()
    for key, value in sets.items():
        head, dot, rest = key.partition(".")
        if head not in allowed or (dot and head not in ("source_params", "edit_params", "pretrain")):
            raise RiskError(f"--set {key}: not a backbone key; allowed: {', '.join(allowed)} (dotted: "
                            "pretrain.<recipe key>, source_params.<name>, edit_params.<name>). The target, probe set "
                            "and size are the experiment's")
        out[head] = {**(out.get(head) or {}), rest: value} if dot else value
    return out


def made_backbone(keys: dict, protocol: dict, root: Path, make_config: Callable[[dict], object],
                  say: Callable[[str], None] = lambda msg: None) -> Backbone:
    """The backbone a sweep's trial with ``keys`` (over the :func:`protocol_keys` of ``protocol``, an
    experiment trial's config) would make: from the store ``root`` when it holds it, else pretrained
    now (``say`` is told so); a random init for ``source: none`` without weights."""
    from spectral_ray import store
    from spectral_ray.experiment import get_backbone

    kept = {k: protocol[k] for k in protocol_keys() if k in protocol}
    cfg = make_config({**kept, **keys, "store": str(root)})
    if cfg.source == "none" and cfg.source_weights is None:
        return Backbone(None, {}, None, keys, f"random init ({cfg.model}, seed {cfg.seed})")
    fresh = not store.entry_dir(cfg.backbone(), root).joinpath("meta.json").exists()
    if fresh:
        say(f"backbone not in the store {root}; pretraining it as a sweep would")
    ckpt, meta = get_backbone(cfg)
    notes = ["pretrained now (it was not in the store)"] if fresh else []
    return Backbone(ckpt, meta, f"store:{meta['key']}", keys, f"store:{meta['key'][:16]} ({_describe(meta)})", notes)


def _probe_config(protocol: dict, backbone: Backbone, artifact_keys: dict, root: Path, make_config):
    """The TrialConfig a trial of this backbone in the experiment would run: the experiment's
    protocol keys, the backbone's keys, the artifact's keys (its baseline enters the probe images)."""
    cfg = make_config({**protocol, **backbone.keys, **artifact_keys, "store": str(root), "degradation": 0.0})
    if backbone.meta:
        src = (backbone.meta.get("config") or {}).get("source_params") or {}
        if src.get("channels", cfg.channels) != cfg.channels:
            raise RiskError(f"the backbone takes {src['channels']}-channel images, the experiment's target "
                            f"{cfg.channels}-channel ones")
        if src.get("size", cfg.size) != cfg.size:
            note = f"the backbone was pretrained at {src['size']} px; measured at the experiment's {cfg.size} px"
            backbone.notes += [note] if note not in backbone.notes else []
    return cfg


def measure(cfg, backbone: Backbone) -> np.ndarray:
    """The backbone's ``psd_probe`` for ``cfg``, as a trial of it measures it before fine-tuning
    (:func:`spectral_ray.experiment.start_trial`). (K+1,) unit-sum."""
    from spectral_ray.experiment import start_trial

    before = start_trial(cfg, backbone.ckpt, backbone.meta, artifact=False).before
    return np.asarray(before.priorities["probe"], dtype=float)


def assess_backbone(basis: risk.Basis, matched: pd.DataFrame, backbone: Backbone, artifact, artifact_keys: dict,
                    root: Path, make_config, *, source: str | None = None, n_boot: int = risk.N_BOOT,
                    labels: dict | None = None, notes: list[str] = ()) -> dict:
    """Measure the backbone on each matching stratum's probe set (once per distinct probe set; the
    stratum's representative trial's :func:`protocol_keys` make it) and assess it there
    (:func:`analysis.risk.assess`): the report's ``backbone``, ``probe``, ``priority``,
    ``priority_summary``, ``strata`` (each with its ``label`` of ``labels``) and ``notes`` (``notes``
    first)."""
    from spectral_ray.spectrum import summarize

    rows, measured, keep = [], {}, protocol_keys()
    for stratum in matched["stratum"]:
        row = risk.representative(basis, stratum, backbone=backbone.id, source=source)
        protocol = {k: v for k, v in risk.trial_config(row).items() if k in keep}
        cfg = _probe_config(protocol, backbone, artifact_keys, root, make_config)
        # the probe set's keys, and the model and seed of the fresh head its priority is taken through
        probe = tuple(repr(getattr(cfg, k)) for k in PROBE_KEYS) + (cfg.effective_finetune_seed, cfg.model)
        if probe not in measured:
            measured[probe] = (measure(cfg, backbone), cfg)
        psd, cfg = measured[probe]
        art = risk.artifact_row(artifact.family, artifact.params, artifact.signature(cfg.size))
        block = risk.block_of_config((backbone.meta or {}).get("config") or backbone.keys)
        rows.append(risk.assess(basis, stratum, psd, art, backbone=backbone.id, block=block, n_boot=n_boot))
        if labels is not None:
            rows[-1]["label"] = labels[stratum]
    (psd, cfg), *others = measured.values()
    notes = list(notes) + backbone.notes
    if others:
        notes.append(f"{len(measured)} probe sets among the strata (different target parameters); the priority "
                     "shown is the first one's")
    return {"backbone": {"id": backbone.id, "description": backbone.text, "model": cfg.model,
                         "in_experiment": any(r["held_out"] for r in rows)},
            "probe": {"target": cfg.target, "images": cfg.psd_images, "size": cfg.size,
                      "seed_for_baseline": cfg.effective_finetune_seed},
            "priority": psd, "priority_summary": summarize(psd), "strata": rows, "notes": notes}


def stratum_labels(basis: risk.Basis, matched: pd.DataFrame) -> dict:
    """{stratum: its short name}: the stratum keys that differ between the matching strata."""
    varying = [k for k in basis.keys if matched[k].astype(str).nunique() > 1] or ["degradation"]
    return {m["stratum"]: " · ".join(f"{k.removeprefix('artifact_resolved/')}={m[k]}" for k in varying if k in m)
            for _, m in matched.iterrows()}


def choose_target(basis: risk.Basis, target: str | None) -> str:
    """``target``, or the experiment's only one; RiskError listing its targets otherwise."""
    have = sorted(basis.table["target"].dropna().unique()) if "target" in basis.table else []
    if target is None:
        if len(have) != 1:
            raise RiskError(f"the experiment has {len(have)} targets: choose one with --target ({', '.join(have)})")
        return have[0]
    if target not in have:
        raise RiskError(f"target {target!r} is not in the experiment; its targets: {', '.join(have)}")
    return target


def header(exp, basis: risk.Basis, family: str, artifact, size: int) -> dict:
    """The report's head: the experiment, F4's verdict, the artifact and its signature at ``size``."""
    from spectral_ray.spectrum import summarize

    f4, signature = basis.f4, artifact.signature(size)
    return {"experiment": str(exp), "significant": basis.significant,
            "f4": {"verdict": f4.verdict, "rho": f4.value, "p": f4.p_value, "n_units": f4.n_units},
            "artifact": {"family": family, "params": dict(artifact.params), "signature": signature,
                         "signature_summary": summarize(signature) if signature.sum() > 0 else None},
            "notes": []}
