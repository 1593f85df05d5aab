"""Calibrate the artifact default strengths: I.I.D. vs O.O.D. AUC of a small CNN trained on the
degradation protocol's splits (docs/SHORTCUTS.md records the numbers this prints).

For each target × artifact (family at its default strength, plus extra ``band`` amplitudes) × d:
build ``make_splits(target, artifact, d, fold, seed)``, train a randomly initialised CNN
(timm ``resnet10t`` by default, one torch thread, 64 px) for a few epochs on train (val for
monitoring only), and print the final-epoch I.I.D. and O.O.D. test AUC.

Goals (issue 3): at d = 0 the O.O.D. AUC is within 0.05 of I.I.D. (the artifact does not mimic
the label cue); as d grows the O.O.D. AUC falls gradually.

    .venv/bin/python bench/calibrate_shortcuts.py --targets ct_lesion mri_knee \
        --families none band photon_noise nlm lowpass --degradations 0 1 --epochs 5

``--target synthetic`` runs on a built-in toy target (no dataset module needed) to smoke-test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spectral_ray.artifacts import get_artifact  # noqa: E402
from spectral_ray.data.registry import ImageDataset  # noqa: E402
from spectral_ray.protocol import make_splits  # noqa: E402
from spectral_ray.shortcuts import clean_model_gaps, train_small_cnn  # noqa: E402


def synthetic_target(n_patients: int = 150, size: int = 64, seed: int = 0) -> ImageDataset:
    """Toy target: a Gaussian blob on 1/f² clutter; positives have a larger blob (radius cue)."""
    from spectral_ray.artifacts import reference_images

    rng = np.random.default_rng(seed)
    per = rng.integers(3, 7, n_patients)
    groups = np.repeat(np.arange(n_patients), per)
    labels = np.repeat(rng.integers(0, 2, n_patients), per)
    n = len(groups)
    clutter = reference_images(size, n, seed=seed + 50)[:, 0]
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.3, size * 0.7, (2, n))
    radius = np.where(labels == 1, 6.0, 4.5) * rng.uniform(0.8, 1.2, n)
    blob = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / (2 * radius[:, None, None] ** 2))
    images = np.clip(0.6 * clutter + 0.35 * blob, 0, 1).astype(np.float32)[:, None]
    return ImageDataset(images, labels.astype(np.int64), ["small", "large"], groups.astype(np.int64), "synthetic", {})


def load_target(name: str, args) -> ImageDataset:
    if name == "synthetic":
        return synthetic_target(size=args.size)
    from spectral_ray.data import get_dataset

    params = {"size": args.size}
    if args.n:
        params["n"] = args.n
    return get_dataset(name, progress=False, **params)


def artifact_grid(args) -> list[tuple[str, dict, list[float]]]:
    """(family, params, degradations) cells."""
    cells = []
    for fam in args.families:
        cells.append((fam, {}, [0.0] if fam == "none" else list(args.degradations)))
    for amp in args.band_amplitudes:
        cells.append(("band", {"amplitude": amp}, list(args.band_degradations)))
    for spec in args.cells:
        cells.append(parse_cell(spec))
    return cells


def parse_cell(spec: str) -> tuple[str, dict, list[float]]:
    """``family:key=value,key=value:d1,d2`` (params may be empty) -> (family, params, degradations)."""
    family, params, ds = spec.split(":")
    out = {}
    for item in filter(None, params.split(",")):
        k, v = item.split("=")
        try:
            out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            out[k] = v
    return family, out, [float(d) for d in ds.split(",")]


_CLEAN_GAPS: dict = {}


def _cell_name(family: str, params: dict) -> str:
    return family + ":" + ",".join(f"{k}={v}" for k, v in params.items())


def run_cell(ds: ImageDataset, family: str, params: dict, d: float, fold: int, seed: int, args) -> dict:
    """Train on the (d, fold, seed) splits and score I.I.D./O.O.D. At d = 0 the training data
    depend on the artifact only through its baseline (photon noise: every image at the baseline
    dose), so ``clean_model_gaps`` trains one model per (target, fold, seed, baseline) and scores
    it on the O.O.D. sets of every d = 0 cell with that baseline at once; the first d = 0 cell
    carries the times of all of them."""
    from spectral_ray.training import evaluate

    recipe = {"model": args.model, "epochs": args.epochs, "lr": args.lr}
    art = get_artifact(family, **params)
    if d == 0:
        key = (ds.name, fold, seed)
        first = key not in _CLEAN_GAPS
        if first:
            d0_cells = {_cell_name(f, p): get_artifact(f, **p) for f, p, degradations in artifact_grid(args) if 0.0 in degradations}
            t0 = time.perf_counter()
            _CLEAN_GAPS[key] = clean_model_gaps(ds, d0_cells, fold, seed, **recipe)
            t_total = time.perf_counter() - t0
        gaps = _CLEAN_GAPS[key]
        cell = _cell_name(family, params)
        val, iid, ood = gaps["val_auc_for"][cell], gaps["iid_auc_for"][cell], gaps["ood_auc"][cell]
        n_train, n_art_train = gaps["n_train"], 0
        t_train = gaps["train_time_s"] if first else 0.0
        t_split = t_total - t_train if first else 0.0
    else:
        t0 = time.perf_counter()
        s = make_splits(ds, art, d, fold, seed)
        t_split = time.perf_counter() - t0
        model, hist = train_small_cnn(s, seed, **recipe)
        t_train = hist["train_time_s"]
        val = evaluate(model, s.val.images, s.val.labels)["auc"]
        iid = evaluate(model, s.test_iid.images, s.test_iid.labels)["auc"]
        ood = evaluate(model, s.test_ood.images, s.test_ood.labels)["auc"]
        n_train, n_art_train = len(s.train), int(s.artifact_mask["train"].sum())
    return {
        "target": ds.name,
        "family": family,
        "params": dict(art.params),
        "d": d,
        "fold": fold,
        "seed": seed,
        "n_train": n_train,
        "n_art_train": n_art_train,
        "val_auc": round(val, 4),
        "iid_auc": round(iid, 4),
        "ood_auc": round(ood, 4),
        "split_s": round(t_split, 1),
        "train_s": round(t_train, 1),
        "epochs": args.epochs,
        "model": args.model,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", default=["ct_lesion", "mri_knee"])
    ap.add_argument("--families", nargs="*", default=["none", "band", "photon_noise", "nlm", "lowpass"])
    ap.add_argument("--degradations", nargs="+", type=float, default=[0.0, 1.0])
    ap.add_argument("--band-amplitudes", nargs="*", type=float, default=[])
    ap.add_argument("--band-degradations", nargs="+", type=float, default=[0.0, 0.2, 0.5, 1.0])
    ap.add_argument("--cells", nargs="*", default=[], help="extra cells: family:key=value,...:d1,d2")
    ap.add_argument("--folds", nargs="+", type=int, default=[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=0, help="images per target (0 = the dataset's default)")
    ap.add_argument("--out", type=Path, help="append one JSON line per run here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    print(f"# calibrate_shortcuts: model={args.model} epochs={args.epochs} lr={args.lr} size={args.size} "
          f"folds={args.folds} seeds={args.seeds} torch={torch.__version__} threads=1")
    print(f"{'target':<10} {'family':<13} {'params':<34} {'d':>4} {'f':>2} {'s':>2} {'n_tr':>5} {'art':>4} "
          f"{'val':>6} {'iid':>6} {'ood':>6} {'ood-iid':>7} {'t_s':>5}")
    for tname in args.targets:
        ds = load_target(tname, args)
        ds.name = tname
        for family, params, degradations in artifact_grid(args):
            shown = ",".join(f"{k}={v}" for k, v in params.items()) or "default"
            for d in degradations:
                rows = []
                for fold in args.folds:
                    for seed in args.seeds:
                        r = run_cell(ds, family, params, d, fold, seed, args)
                        rows.append(r)
                        print(f"{tname:<10} {family:<13} {shown:<34} {d:>4.2f} {fold:>2} {seed:>2} {r['n_train']:>5} "
                              f"{r['n_art_train']:>4} {r['val_auc']:>6.3f} {r['iid_auc']:>6.3f} {r['ood_auc']:>6.3f} "
                              f"{r['ood_auc'] - r['iid_auc']:>+7.3f} {r['train_s']:>5.0f}", flush=True)
                        if args.out:
                            with open(args.out, "a") as f:
                                f.write(json.dumps(r) + "\n")
                if len(rows) > 1:
                    iid = np.array([r["iid_auc"] for r in rows])
                    ood = np.array([r["ood_auc"] for r in rows])
                    print(f"{'':<10} {'':<13} {'mean ± std':<34} {d:>4.2f} {'':>2} {'':>2} {'':>5} {'':>4} {'':>6} "
                          f"{iid.mean():>6.3f} {ood.mean():>6.3f} {(ood - iid).mean():>+7.3f}  (±{ood.std():.3f} ood)", flush=True)


if __name__ == "__main__":
    main()
