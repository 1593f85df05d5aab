"""``spectral-ray risk``: a backbone's shortcut cost predicted from a finished experiment's F4 relation. docs/RISK.md."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import yaml

from . import UserError


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
    for flag in ("--edit-strength", "--edit-omega"):
        b.add_argument(flag, type=float, default=None)
    b.add_argument("--seed", type=int, default=None, help="pretraining seed (default 0)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another backbone key (YAML value; a wrong key lists the allowed ones)"
                   + "; dotted for recipes and dicts (pretrain.epochs=3, source_params.x=1); repeatable")
    a = p.add_argument_group("artifact and stratum")
    a.add_argument("--artifact", required=True, help="artifact family, as a sweep's `artifact`")
    for flag in ("--artifact-omega", "--artifact-amplitude"):
        a.add_argument(flag, type=float, default=None)
    a.add_argument("--artifact-param", action="append", default=[], metavar="NAME=VALUE",
                   help="another artifact parameter (YAML value), as a sweep's `artifact_params`; repeatable")
    a.add_argument("--target", help="target dataset (default: the experiment's, if it has one)")
    a.add_argument("--degradation", type=float, default=None, help="one degradation level (default: every level > 0)")
    p.add_argument("--validate", action="store_true", help="also predict each of the experiment's models with its "
                   "seed block left out and F4 re-run without it; rank agreement and interval coverage (no backbone)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = args.experiment
    if "://" not in exp and not Path(exp).is_dir():
        raise UserError(f"experiment folder not found: {exp} (give the folder `spectral-ray sweep` printed, "
                        "<storage>/<name>)")
    _check_backbone_args(args)
    family, artifact_keys, artifact = _artifact(args)
    from analysis import risk, risk_backbone as rb

    try:
        trials, basis, matched = rb.load(exp, args.target, family, artifact.params, args.degradation)
    except risk.RiskError as e:
        raise UserError(str(e)) from None
    report = rb.header(exp, basis, family, artifact, rb.trial_size(basis, matched))
    labels = rb.stratum_labels(basis, matched)
    if args.store is not None or args.weights is not None or args.source is not None:
        root, notes = rb.store_root_for(args.store_root, trials)
        try:
            report.update(rb.assess_backbone(basis, matched, _backbone(args, basis, matched, root), artifact,
                                             artifact_keys, root, _trial_config, source=args.source,
                                             n_boot=args.bootstrap, labels=labels, notes=notes))
        except risk.RiskError as e:
            raise UserError(str(e)) from None
    if args.validate:
        art = risk.artifact_row(family, artifact.params, report["artifact"]["signature"])
        report["held_out"] = [{**risk.held_out_check(basis, s, art, n_boot=args.bootstrap), "label": labels[s]}
                              for s in matched["stratum"]]
    print(risk.dumps(report) if args.json else render(report))
    return 0


def _backbone(args, basis, matched, root: Path):
    """The backbone named by --store, or made as a sweep's trial would make it (over the protocol
    keys of the first matching stratum's trial)."""
    from analysis import risk, risk_backbone as rb

    if args.store is not None:
        return rb.store_backbone(args.store, root)
    protocol = risk.trial_config(risk.representative(basis, matched["stratum"].iloc[0], source=args.source))
    edits = {k: getattr(args, k) for k in ("edit", "edit_strength", "edit_omega")}
    keys = rb.with_sets(rb.backbone_keys(args.source, args.weights, args.seed, edits, protocol),
                        _yaml_pairs(args.set, "--set"))
    return rb.made_backbone(keys, protocol, root, _trial_config,
                            say=lambda msg: print(f"spectral-ray risk: {msg}", file=sys.stderr))


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
    from analysis.risk_backbone import RiskError, resolve_artifact

    keys = {"artifact": args.artifact, "artifact_omega": args.artifact_omega, "artifact_amplitude":
            args.artifact_amplitude, "artifact_params": _yaml_pairs(args.artifact_param, "--artifact-param")}
    try:
        return resolve_artifact(keys, flag=lambda k: f"--{k.replace('_', '-')}")
    except RiskError as e:
        raise UserError(str(e)) from None


def _trial_config(keys: dict):
    from pydantic import ValidationError

    from spectral_ray.config import TrialConfig, trial_error

    try:
        return TrialConfig.model_validate(keys)
    except ValidationError as e:
        problem = trial_error(e)
        raise UserError(f"backbone key `{problem.field}`: {problem.message}") from None


def _num(v, fmt="+.3f") -> str:
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
