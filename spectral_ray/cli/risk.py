"""``spectral-ray risk``: a backbone's shortcut cost predicted from a finished experiment's F4 relation. docs/RISK.md."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import UserError

def backbone_keys() -> tuple[str, ...]:
    """TrialConfig keys that make the backbone (their role, config.ROLES); `--set` may change these
    only (the rest is the experiment's protocol: target, probe set, size). A function: config
    imports torch, which building the CLI's parser must not."""
    from spectral_ray.config import fields_with_role

    return fields_with_role("backbone")


def protocol_keys() -> tuple[str, ...]:
    """Keys of the experiment's trial that the probe measurement keeps (its target, probe set, split,
    threads), and its model and pretraining recipe as the backbone's defaults."""
    from spectral_ray.config import fields_with_role

    return fields_with_role("finetune", "shared", "measurement", "execution") + ("model", "pretrain")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "risk", help="predict a backbone's shortcut cost from a finished experiment (before fine-tuning)",
        description="Measure a backbone's learning priority on the target's probe set as trials do (psd_probe) and "
        "its alignment with an artifact (F4's measure); print the shortcut cost (I.I.D. − O.O.D. AUC) that F4's "
        "within-source relation predicts (Theil–Sen within the backbone's source × edit arm, 95 % bootstrap), "
        "or say that F4 finds no significant relation or the backbone lies outside the fitted sources/edits.")
    p.add_argument("--experiment", required=True, help="finished experiment folder (as `spectral-ray report` reads it)")
    b = p.add_argument_group("backbone (one of --store, --weights, --source)")
    b.add_argument("--store", metavar="KEY", help="a pretrained backbone in the store: its key (`pretrain_key`) or a prefix")
    b.add_argument("--store-root", metavar="DIR", help="the backbone store (default: the experiment's recorded "
                   "`store`, else $SPECTRAL_RAY_STORE or ~/.cache/spectral-ray/backbones)")
    b.add_argument("--weights", metavar="SPEC", help="published weights as `source_weights` takes them: timm, "
                   "file:PATH, radimagenet:PATH (with --source: continued pretraining)")
    b.add_argument("--source", help="pretrain on this source as a sweep would (reusing the store when present); "
                   "`none` with no --weights: a random init")
    b.add_argument("--edit", default=None, help="source edit family (default none)")
    b.add_argument("--edit-strength", type=float, default=None)
    b.add_argument("--edit-omega", type=float, default=None)
    b.add_argument("--seed", type=int, default=None, help="pretraining seed (default 0)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another backbone key (YAML value; a wrong key lists the allowed ones)"
                   + "; dotted for recipes and dicts (pretrain.epochs=3, source_params.x=1); repeatable")
    a = p.add_argument_group("artifact and stratum")
    a.add_argument("--artifact", required=True, help="artifact family, as a sweep's `artifact`")
    a.add_argument("--artifact-omega", type=float, default=None)
    a.add_argument("--artifact-amplitude", type=float, default=None)
    a.add_argument("--artifact-param", action="append", default=[], metavar="NAME=VALUE",
                   help="another artifact parameter (YAML value), as a sweep's `artifact_params`; repeatable")
    a.add_argument("--target", help="target dataset (default: the experiment's, if it has one)")
    a.add_argument("--degradation", type=float, default=None, help="one degradation level (default: every level > 0)")
    p.add_argument("--validate", action="store_true", help="also predict each of the experiment's models with its "
                   "seed block left out and F4 re-run without it; rank agreement and interval coverage (no backbone)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=run)


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


def run(args) -> int:
    exp = _experiment_path(args.experiment)
    _check_backbone_args(args)
    family, artifact_keys, artifact = _artifact(args)
    from analysis import risk
    from spectral_ray.config import TrialConfig

    trials, basis, matched = _load(exp, args, family, artifact)
    # the image size the trials ran at (recorded by every launcher run; older ones ran at the default)
    size = risk.trial_config(risk.representative(basis, matched["stratum"].iloc[0])).get(
        "size", TrialConfig.model_fields["size"].default)
    report = _header(exp, basis, family, artifact, size)
    labels = _labels(basis, matched)
    if args.store is not None or args.weights is not None or args.source is not None:
        root, notes = _store_root(args, trials)
        report.update(_assess_backbone(args, basis, matched, root, artifact_keys, artifact))
        report["notes"] = notes + report["notes"]
        for r in report["strata"]:
            r["label"] = labels[r["stratum"]]
    if args.validate:
        art = risk.artifact_row(family, artifact.params, artifact.signature(size))
        report["held_out"] = [{**risk.held_out_check(basis, s, art, n_boot=args.bootstrap), "label": labels[s]}
                              for s in matched["stratum"]]
    print(risk.dumps(report) if args.json else render(report))
    return 0


def _load(exp: str, args, family: str, artifact):
    """(trials, F4's basis, the matching strata), or UserError naming what the experiment has."""
    from analysis import risk
    from analysis.collect import collect

    try:
        trials = collect(exp).trials
        basis = risk.load_basis(trials)
        target = _target(basis, args.target)
        matched = risk.match_strata(basis, target=target, family=family, params=artifact.params,
                                    degradation=args.degradation)
    except (risk.RiskError, FileNotFoundError) as e:
        raise UserError(f"{exp}: {e}") from None
    except ValueError as e:  # collect: a folder without Ray Tune trials
        if "no Ray Tune trials" not in str(e):
            raise
        raise UserError(str(e)) from None
    return trials, basis, matched


def _labels(basis, matched) -> dict:
    """{stratum: its short name}: the stratum keys that differ between the matching strata."""
    varying = [k for k in basis.keys if matched[k].astype(str).nunique() > 1] or ["degradation"]
    return {m["stratum"]: " · ".join(f"{k.removeprefix('artifact_resolved/')}={m[k]}" for k in varying if k in m)
            for _, m in matched.iterrows()}


def _assess_backbone(args, basis, matched, root: Path, artifact_keys: dict, artifact) -> dict:
    """Measure the backbone on each matching stratum's probe set (once per distinct probe set) and
    assess it there (analysis.risk.assess)."""
    from analysis import risk
    from spectral_ray.spectrum import summarize

    first = risk.representative(basis, matched["stratum"].iloc[0], source=args.source)
    backbone = _backbone(args, risk.trial_config(first), root)
    rows, measured = [], {}
    for stratum in matched["stratum"]:
        row = risk.representative(basis, stratum, backbone=backbone.id, source=args.source)
        cfg = _probe_config(risk.trial_config(row), backbone, artifact_keys, root)
        probe = (cfg.target, cfg.target_n, repr(cfg.target_params), cfg.data_seed, cfg.size, cfg.channels,
                 cfg.psd_images, cfg.effective_finetune_seed, cfg.model)
        if probe not in measured:
            measured[probe] = (_measure(cfg, backbone), cfg)
        psd, cfg = measured[probe]
        art = risk.artifact_row(artifact.family, artifact.params, artifact.signature(cfg.size))
        block = risk.block_of_config((backbone.meta or {}).get("config") or backbone.keys)
        rows.append(risk.assess(basis, stratum, psd, art, backbone=backbone.id, block=block, n_boot=args.bootstrap))
    (psd, cfg), *others = measured.values()
    notes = list(backbone.notes)
    if others:
        notes.append(f"{len(measured)} probe sets among the strata (different target parameters); the priority "
                     "shown is the first one's")
    return {"backbone": {"id": backbone.id, "description": backbone.text, "model": cfg.model,
                         "in_experiment": any(r["held_out"] for r in rows)},
            "probe": {"target": cfg.target, "images": cfg.psd_images, "size": cfg.size,
                      "seed_for_baseline": cfg.effective_finetune_seed},
            "priority": psd, "priority_summary": summarize(psd), "strata": rows, "notes": notes}


def _experiment_path(path: str) -> str:
    if "://" not in path and not Path(path).is_dir():
        raise UserError(f"experiment folder not found: {path} (give the folder `spectral-ray sweep` printed, "
                        "<storage>/<name>)")
    return path


def _check_backbone_args(args) -> None:
    config = [f"--{k.replace('_', '-')}" for k in ("edit", "edit_strength", "edit_omega", "seed")
              if getattr(args, k) is not None] + (["--set"] if args.set else [])
    if args.store is not None:
        clash = [n for n, v in (("--weights", args.weights), ("--source", args.source)) if v is not None] + config
        if clash:
            raise UserError(f"--store names a finished backbone; {', '.join(clash)} would describe another one "
                            "(use --source/--weights with them instead)")
    elif args.weights is None and args.source is None and config:
        raise UserError(f"{', '.join(config)} describe a backbone to pretrain: give --source NAME (or --weights SPEC) too")
    elif args.weights is None and args.source is None and not args.validate:
        raise UserError("name a backbone: --store KEY (a backbone in the store), --weights SPEC (timm, file:PATH, "
                        "radimagenet:PATH) or --source NAME (pretrained as a sweep would, with --edit, --seed, --set); or "
                        "--validate alone to check the experiment's own models")
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap must be ≥ 100 resamples, got {args.bootstrap}")


def _yaml_pairs(items: list[str], flag: str) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"{flag} {key}: {value!r} is not a YAML value") from None
    return out


def _artifact(args):
    """(family, the TrialConfig artifact keys, the Artifact with its resolved parameters)."""
    from spectral_ray.artifacts import FAMILIES, get_artifact

    keys = {"artifact": args.artifact, "artifact_omega": args.artifact_omega,
            "artifact_amplitude": args.artifact_amplitude,
            "artifact_params": _yaml_pairs(args.artifact_param, "--artifact-param")}
    try:
        family = FAMILIES.family(args.artifact)
        artifact = get_artifact(args.artifact, **FAMILIES.trial_kwargs(args.artifact, keys, keys["artifact_params"]))
    except ValueError as e:
        raise UserError(f"--artifact: {e}") from None
    ignored = [f"--{k.replace('_', '-')}" for k in FAMILIES.ignored_keys(family.name) if keys.get(k) is not None]
    if ignored:
        raise UserError(f"--artifact {family.name} has no parameter set by {', '.join(ignored)}; its parameters: "
                        + ", ".join(family.params))
    return family.name, keys, artifact


def _target(basis, target: str | None) -> str:
    from analysis.risk import RiskError

    have = sorted(basis.table["target"].dropna().unique()) if "target" in basis.table else []
    if target is None:
        if len(have) != 1:
            raise RiskError(f"the experiment has {len(have)} targets: choose one with --target ({', '.join(have)})")
        return have[0]
    if target not in have:
        raise RiskError(f"target {target!r} is not in the experiment; its targets: {', '.join(have)}")
    return target


def _store_root(args, trials) -> tuple[Path, list[str]]:
    """--store-root, else the store the experiment's trials recorded (if it is here), else the default."""
    from spectral_ray.store import store_root

    if args.store_root:
        return Path(args.store_root).expanduser(), []
    recorded = sorted({s for s in trials.get("store", []) if isinstance(s, str) and s})
    here = [s for s in recorded if Path(s).is_dir()]
    if here:
        return Path(here[0]), []
    default = store_root()
    note = [f"the experiment's store ({recorded[0]}) is not on this machine; using {default}"] if recorded else []
    return default, note


def _store_entry(key: str, root: Path) -> tuple[Path, dict]:
    from spectral_ray.store import load_meta, stats

    entries = stats(root)["entries"]
    hits = [e for e in entries if e["key"].startswith(key.lower())]
    if len(hits) == 1:
        return Path(hits[0]["path"]), load_meta(hits[0]["path"])
    shown = hits or entries
    listing = "; ".join(f"{e['key'][:16]} ({e['source']}, {_edit_text(e['edit_family'], e['edit_strength'])}, "
                        f"{e['model']}, seed {e['seed']})" for e in shown[:20]) + (" …" if len(shown) > 20 else "")
    if hits:
        raise UserError(f"--store {key!r} matches {len(hits)} backbones in {root}; give more of the key: {listing}")
    raise UserError(f"--store: no backbone with key {key!r} in the store {root}; "
                    + (f"its {len(entries)} backbones: {listing}" if entries else "the store is empty")
                    + " (--store-root DIR names another store)")


def _edit_text(family, strength) -> str:
    from spectral_ray.editing import is_edit

    return f"edit {family} s={strength:g}" if is_edit(family or "none", strength or 0.0) else "unedited"


def _describe(meta: dict) -> str:
    cfg = meta.get("config") or {}
    edit = _edit_text(cfg.get("edit_family"), cfg.get("edit_strength"))
    init = f", from {cfg['init']}" if cfg.get("init") else ""
    size = (cfg.get("source_params") or {}).get("size")
    return f"{cfg.get('source')}, {edit}, {cfg.get('model')}, seed {cfg.get('seed')}{init}, {size} px"


def _backbone(args, protocol: dict, root: Path) -> Backbone:
    """The backbone named by --store, or made as a sweep's trial would make it (get_backbone)."""
    if args.store is not None:
        ckpt, meta = _store_entry(args.store, root)
        cfg = meta.get("config") or {}
        keys = {"model": cfg.get("model"), "seed": cfg.get("seed", 0)}
        return Backbone(ckpt, meta, f"store:{meta['key']}", keys, f"store:{meta['key'][:16]} ({_describe(meta)})")
    from spectral_ray.experiment import get_backbone, pretrain_config

    keys = {"source": args.source or "none", "source_weights": args.weights, "seed": args.seed or 0}
    keys.update({k: v for k, v in (("edit", args.edit), ("edit_strength", args.edit_strength),
                                   ("edit_omega", args.edit_omega)) if v is not None})
    if protocol.get("source") == keys["source"]:  # the experiment's pretraining data of this source
        keys.update({k: protocol[k] for k in ("source_n", "source_params") if k in protocol})
    keys = _with_sets(keys, args.set)
    cfg = _trial_config({**{k: protocol[k] for k in protocol_keys() if k in protocol}, **keys, "store": str(root)})
    if cfg.source == "none" and cfg.source_weights is None:
        return Backbone(None, {}, None, keys, f"random init ({cfg.model}, seed {cfg.seed})")
    from spectral_ray import store

    fresh = not store.entry_dir(pretrain_config(cfg), root).joinpath("meta.json").exists()
    if fresh:
        print(f"spectral-ray risk: backbone not in the store {root}; pretraining it as a sweep would", file=sys.stderr)
    ckpt, meta = get_backbone(cfg)
    notes = ["pretrained now (it was not in the store)"] if fresh else []
    return Backbone(ckpt, meta, f"store:{meta['key']}", keys, f"store:{meta['key'][:16]} ({_describe(meta)})", notes)


def _with_sets(keys: dict, items: list[str]) -> dict:
    out = dict(keys)
    for key, value in _yaml_pairs(items, "--set").items():
        head, dot, rest = key.partition(".")
        if head not in backbone_keys() or (dot and head not in ("source_params", "edit_params", "pretrain")):
            raise UserError(f"--set {key}: not a backbone key; allowed: {', '.join(backbone_keys())} (dotted: "
                            "pretrain.<recipe key>, source_params.<name>, edit_params.<name>). The target, probe set "
                            "and size are the experiment's")
        if dot:
            out[head] = {**(out.get(head) or {}), rest: value}
        else:
            out[head] = value
    return out


def _trial_config(keys: dict):
    from pydantic import ValidationError

    from spectral_ray.config import TrialConfig, trial_error

    try:
        return TrialConfig.model_validate(keys)
    except ValidationError as e:
        problem = trial_error(e)
        raise UserError(f"backbone key `{problem.field}`: {problem.message}") from None


def _probe_config(protocol: dict, backbone: Backbone, artifact_keys: dict, root: Path):
    """The TrialConfig a trial of this backbone in the experiment would run: the experiment's
    protocol keys, the backbone's keys, the artifact's keys (its baseline enters the probe images)."""
    keys = {**{k: protocol[k] for k in protocol_keys() if k in protocol}, **backbone.keys, **artifact_keys,
            "store": str(root), "degradation": 0.0}
    cfg = _trial_config(keys)
    if backbone.meta:
        src = (backbone.meta.get("config") or {}).get("source_params") or {}
        if src.get("channels", cfg.channels) != cfg.channels:
            raise UserError(f"the backbone takes {src['channels']}-channel images, the experiment's target "
                            f"{cfg.channels}-channel ones")
        if src.get("size", cfg.size) != cfg.size:
            note = f"the backbone was pretrained at {src['size']} px; measured at the experiment's {cfg.size} px"
            backbone.notes += [note] if note not in backbone.notes else []
    return cfg


def _measure(cfg, backbone: Backbone):
    """The backbone's ``psd_probe`` for ``cfg``: run_finetune's steps up to its priority before
    fine-tuning (trial_splits → probe_set → starting_model → probe_priority). (K+1,) unit-sum."""
    import numpy as np
    import torch

    from spectral_ray.experiment import probe_priority, probe_set, starting_model, trial_splits

    torch.set_num_threads(cfg.threads)
    _, splits = trial_splits(cfg)
    probe = probe_set(splits.test_iid, cfg.psd_images)
    model = starting_model(cfg, backbone.ckpt, backbone.meta, cfg.effective_finetune_seed)
    return np.asarray(probe_priority(model, probe.images, probe.labels), dtype=float)


def _header(exp, basis, family: str, artifact, size: int) -> dict:
    from spectral_ray.spectrum import summarize

    f4, signature = basis.f4, artifact.signature(size)
    return {"experiment": str(exp), "significant": basis.significant,
            "f4": {"verdict": f4.verdict, "rho": f4.value, "p": f4.p_value, "n_units": f4.n_units},
            "artifact": {"family": family, "params": dict(artifact.params), "signature": signature,
                         "signature_summary": summarize(signature) if signature.sum() > 0 else None},
            "notes": []}


def _num(v, fmt="+.3f") -> str:
    import math

    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


NOT_SIGNIFICANT = "NOT SIGNIFICANT: F4 finds no significant within-source relation here, so no cost is predicted."


def render(report: dict) -> str:
    """The report as readable tables (drops in AUC units)."""
    f4, a = report["f4"], report["artifact"]
    params = ", ".join(f"{k}={v}" for k, v in a["params"].items())
    sig = a["signature_summary"]
    lines = [f"experiment  {report['experiment']}",
             f"F4          {f4['verdict']} (ρ = {_num(f4['rho'], '.3f')}, p = {_num(f4['p'], '.3g')}; {f4['n_units']})",
             f"artifact    {a['family']} ({params})"
             + (f"; signature peak at k/K = {sig['peak']:.3f}, centroid {sig['centroid']:.3f}" if sig else "")]
    if "strata" in report:
        lines += _render_backbone(report)
    if "held_out" in report:
        lines += _render_held_out(report)
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def _render_backbone(report: dict) -> list[str]:
    b, s, strata = report["backbone"], report["priority_summary"], report["strata"]
    lines = [f"backbone    {b['description']}"
             + ("  — one of the experiment's models: left out of each fit" if b["in_experiment"] else ""),
             f"probe set   {report['probe']['images']} clean {report['probe']['target']} test images at "
             f"{report['probe']['size']} px (the trials' psd_probe)",
             f"priority    centroid {s['centroid']:.3f}; mass low {s['low']:.3f} / mid {s['mid']:.3f} / high {s['high']:.3f}",
             f"alignment   {strata[0]['alignment_method']} (F4's measure)", ""]
    if not report["significant"]:
        lines += [NOT_SIGNIFICANT + " Shown: where the backbone's alignment ranks among the experiment's models, and "
                  "the drops they had.", ""]
    rows = [["stratum", "alignment", "more aligned than", "ρ stratum (p)", "pred. drop", "95% CI (fit)",
             "95% one model", "measured", "drops: mean [min, max]"]]
    for r in strata:
        p = r["prediction"] or {}
        drop = (_num(p["drop"]) + (" (extrap.)" if p["extrapolated"] else "") + (" *" if p["weak_in_stratum"] else "")
                if p else "—")
        rows.append([r["label"], f"{r['alignment']:.4f}", f"{r['models_less_aligned']}/{r['n_models']}",
                     f"{_num(r['stratum_rho'], '+.2f')} ({_num(r['stratum_p'], '.2g')})", drop,
                     f"{_num(p['ci'][0])}…{_num(p['ci'][1])}" if p else "—",
                     f"{_num(p['pi'][0])}…{_num(p['pi'][1])}" if p else "—",
                     _num((r.get("measured") or {}).get("drop")),
                     f"{_num(r['mean_drop'])} [{_num(r['min_drop'])}, {_num(r['max_drop'])}]"])
    lines += _table(rows) + ["", "drop = shortcut cost, I.I.D. − O.O.D. AUC of the same fine-tune; more aligned than = "
                             "models of the stratum with lower alignment; fit = Theil–Sen within the backbone's source × "
                             "edit arm (slope from pairs of one block), 95 % bootstrap within blocks"]
    if any((r["prediction"] or {}).get("weak_in_stratum") for r in strata):
        lines.append("* in this stratum alone the relation is not significant (p ≥ 0.05; F4 pools the strata): the "
                     "line's value, but it ranks backbones poorly here (docs/RISK.md)")
    from analysis.findings import FEW_MODELS

    few = sorted({r["n_models"] for r in strata if r["few_models"]})
    if few and report["significant"]:
        lines.append(f"few models: the fit rests on {', '.join(map(str, few))} pretrained models; F4 calls fewer than "
                     f"{FEW_MODELS} underpowered, and one model more or less moves the line (docs/RISK.md)")
    for r in strata:
        p = r["prediction"] or {}
        if p.get("extrapolated"):
            lines.append(f"extrapolated ({r['label']}): alignment {r['alignment']:.4f} lies outside the models' "
                         f"[{p['alignment_range'][0]:.4f}, {p['alignment_range'][1]:.4f}]; the drop extends the line")
        if r.get("reason") and report["significant"]:
            lines.append(f"no prediction ({r['label']}): {r['reason']}")
    tvs = [r["measured"]["priority_tv"] for r in strata if (r.get("measured") or {}).get("priority_tv") is not None]
    if tvs:
        lines.append(f"priority measured now vs this backbone's psd_probe in the experiment: TV = {max(tvs):.2g}")
    return lines


def _render_held_out(report: dict) -> list[str]:
    lines = ["", "held-out check: each model predicted with its whole seed block left out and F4 re-run without it; "
             "95 % intervals from the other models' held-out residuals"]
    if not report["significant"]:
        return lines + [NOT_SIGNIFICANT]
    rows = [["stratum", "models", "seed blocks", "predicted", "Spearman ρ (predicted, measured)", "interval coverage"]]
    rows += [[h["label"], str(h["n_models"]), str(h["n_blocks"]), str(h["n_predicted"]), _num(h["rho"], "+.2f"),
              _num(h["coverage"], ".0%")] for h in report["held_out"]]
    return lines + _table(rows)
