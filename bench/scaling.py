"""How `spectral-ray sweep` wall-clock grows with grid points, folds, sources and image size,
and where the time goes, from the timings each trial reports.

Run: .venv/bin/python bench/scaling.py [--max-load 1.5] [--rows base deg4 ...]

Each row is a fresh ``spectral-ray sweep`` (subprocess: Ray start-up included; fresh backbone
store and fresh dataset cache, so pretraining and data generation are in it) of a finetune grid
on ct_lesion with a band shortcut, resnet10t, 1 CPU per trial, max_concurrent 2. The columns
are sums over the row's trials of what they report: ``time_backbone_s`` (split into the store's
``train_time_s`` — pretraining including the generation of its source data — and the rest:
waiting on the store's lock for a backbone another trial is training, and loading it), ``time_finetune_s``, ``time_psd_s`` (the final learning priority), Ray's
``time_total_s``, and "other" = time_total − backbone − finetune − psd (target data
generation/loading, splits, the before-priority, the TensorBoard heat map, checkpoint).
"Ray+driver" = wall − Σ time_total_s / 2, the part the 2 parallel slots do not explain
(start-up of Ray and the trial workers, scheduling, imports in fresh workers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import header, run_sweep_cli, trial_results, wait_for_quiet, write_sweep  # noqa: E402

DEGS = [0.0, 1.0, 0.5, 0.2, 0.8, 0.1, 0.3, 0.7]

ROWS = {  # name: (sources, n degradations, folds, size)
    "base": (["natural"], 2, [0], 32),
    "deg4": (["natural"], 4, [0], 32),
    "deg8": (["natural"], 8, [0], 32),
    "folds2": (["natural"], 2, [0, 1], 32),
    "folds4": (["natural"], 2, [0, 1, 2, 3], 32),
    "sources2": (["natural", "medical"], 2, [0], 32),
    "size64": (["natural"], 2, [0], 64),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--source-n", type=int, default=600)
    ap.add_argument("--target-n", type=int, default=200)
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--psd-images", type=int, default=32)
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load below this (0: don't)")
    args = ap.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    header("bench/scaling.py — sweep wall-clock vs grid points, folds, sources, image size")
    print(f"# resnet10t, ct_lesion + band, source_n {args.source_n}, target_n {args.target_n}, pretrain "
          f"{args.pretrain_epochs} ep, finetune {args.finetune_epochs} ep, psd_images {args.psd_images}; "
          f"1 CPU per trial, max_concurrent 2; every row: fresh store + fresh data cache")
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    cols = ("row", "points", "pretrain", "px", "wall s", "s/point", "Σtotal", "pre+gen", "wait",
            "finetune", "psd", "other", "Ray+driver", "load")
    print(("{:<9}{:>7}{:>9}{:>5}" + "{:>9}" * 10).format(*cols))
    for name in args.rows:
        sources, n_deg, folds, size = ROWS[name]
        params = {"source": {"grid": sources}, "degradation": {"grid": DEGS[:n_deg]}, "fold": {"grid": folds},
                  "target": "ct_lesion", "artifact": "band", "model": "resnet10t", "size": size,
                  "source_n": args.source_n, "target_n": args.target_n, "psd_images": args.psd_images,
                  "pretrain.epochs": args.pretrain_epochs, "finetune.epochs": args.finetune_epochs, "seed": 0}
        sweep_file = work / f"{name}.yaml"
        write_sweep(sweep_file, name, params)
        load = wait_for_quiet(args.max_load) if args.max_load > 0 else os.getloadavg()[0]
        wall, _ = run_sweep_cli(sweep_file, work / name, work / f"cache-{name}")
        trials = trial_results(work / name / name)
        s = {k: sum(t["final"].get(k) or 0 for t in trials)
             for k in ("time_total_s", "time_backbone_s", "time_finetune_s", "time_psd_s")}
        metas = [json.loads(p.read_text()) for p in (work / name / "backbones").glob("*/meta.json")]
        pre = sum(m.get("train_time_s") or 0 for m in metas)
        other = s["time_total_s"] - s["time_backbone_s"] - s["time_finetune_s"] - s["time_psd_s"]
        ray = wall - s["time_total_s"] / 2
        print(("{:<9}{:>7}{:>9}{:>5}" + "{:>9.1f}" * 9 + "{:>9.2f}").format(
            name, len(trials), len(metas), size, wall, wall / len(trials), s["time_total_s"], pre,
            s["time_backbone_s"] - pre, s["time_finetune_s"], s["time_psd_s"], other, ray, load), flush=True)
    print(f"# work dir: {work}")


if __name__ == "__main__":
    main()
