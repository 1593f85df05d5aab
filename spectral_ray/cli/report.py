"""``spectral-ray report EXPERIMENT [--out DIR]``: tables, figures and findings of an experiment."""

from __future__ import annotations

import os
from pathlib import Path

from . import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write report.md (findings F1–F5, figures, tables) for a Ray Tune experiment folder",
        description="Read a finished or partly finished Ray Tune experiment folder (a local path or any URI "
        "Ray can store to, e.g. s3://bucket/runs/quick) without a running cluster, aggregate over folds, draw "
        "the figures, check findings F1–F5 and write report.md with PNG/PDF/CSV files beside it.",
    )
    p.add_argument("experiment", help="experiment folder: <storage_path>/<name> as Ray Tune wrote it")
    p.add_argument("--out", default=None,
                   help="output folder (default: EXPERIMENT/report, or ./<name>-report for a remote URI)")
    p.add_argument("--no-ray", action="store_true",
                   help="read the experiment state's JSON directly instead of through Ray's ExperimentAnalysis "
                        "(which unpickles parts of it): for folders copied from elsewhere, or without Ray")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = os.fspath(args.experiment)
    if "://" not in exp and not Path(exp).is_dir():
        raise UserError(f"experiment folder not found: {exp}")
    from analysis.collect import NoTrialsError
    from analysis.report import build_report  # heavy imports (pandas, matplotlib, torch) only here

    try:
        path = build_report(exp, args.out, use_ray=False if args.no_ray else None)
    except FileNotFoundError as e:
        raise UserError(f"{e}") from None
    except NoTrialsError as e:
        raise UserError(f"{e}") from None
    print(path)
    return 0
