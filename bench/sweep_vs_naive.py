"""`spectral-ray sweep` vs a plain sequential script on the same small grid, same seeds.

Run: .venv/bin/python bench/sweep_vs_naive.py [--repeats 1] [--max-load 1.5]

Baseline = how such studies are often run: one Python process, a loop over the grid points, and
for each point generate the data, pretrain the backbone, fine-tune, evaluate and measure the
learning priorities, nothing shared between points. Here each point calls
``spectral_ray.experiment.run_finetune`` with a fresh, empty backbone store and a fresh, empty
dataset cache (so it pretrains and generates everything again), one after another.

Ours = ``spectral-ray sweep`` of the same grid (a subprocess, with a fresh store and cache too):
pretrain-once store, on-disk dataset cache, ``max_concurrent`` trials side by side, 1 CPU each.
Both are timed as whole processes (interpreter start and imports included), and both must give
the same iid_auc / ood_auc per grid point (training is deterministic on CPU with 1 thread).

``--naive-recipe plain`` makes the baseline the way such a script is usually written: fp32, every
evaluation set after every epoch (the recipe knobs ``bf16``, ``channels_last``,
``small_map_conv_pixels``, ``eval_sets_every`` at their library defaults); then the metrics are
compared within noise, not for identity. The default ``same`` runs the sweep's own recipe.

The breakdown of the gain is an accounting from the baseline's own measured parts: pretrainings
saved × mean pretraining time, data generations saved × mean generation time, and what parallel
trials and Ray's overhead make of the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, header, median, run_sweep_cli, trial_results, wait_for_quiet, write_sweep  # noqa: E402


def grid_params(args) -> dict:
    return {
        "source": {"grid": args.sources},
        "degradation": {"grid": args.degradations},
        "fold": {"grid": args.folds},
        "target": "ct_lesion",
        "artifact": "band",
        "model": args.model,
        "size": args.size,
        "source_n": args.source_n,
        "target_n": args.target_n,
        "psd_images": args.psd_images,
        "pretrain.epochs": args.pretrain_epochs,
        "finetune.epochs": args.finetune_epochs,
        "seed": 0,
    }


# the recipe knobs of a plain script (the library's Recipe defaults): fp32, every set every epoch
PLAIN = {"bf16": False, "channels_last": False, "small_map_conv_pixels": 0, "eval_sets_every": 1}


def point_key(cfg: dict) -> tuple:
    return (cfg["source"], float(cfg["degradation"]), int(cfg["fold"]))


# ------------------------------------------------------------------------------ the baseline


def naive_worker(grid_file: Path, out_file: Path) -> None:
    """The baseline script's body: every grid point from scratch, in this one process."""
    import torch  # noqa: F401  (imports are part of the script's cost, as in the sweep's)

    from spectral_ray.config import SweepFile, TrialConfig, nest
    from spectral_ray.data import cache
    from spectral_ray.experiment import run_finetune

    sweep = SweepFile.model_validate(json.loads(grid_file.read_text()))
    gen_times: list[float] = []
    real_load_or_build = cache.load_or_build

    def timed_load_or_build(name, params, build, **kw):  # every call builds: the cache dir is empty
        t0 = time.perf_counter()
        try:
            return real_load_or_build(name, params, build, **kw)
        finally:
            gen_times.append((name, time.perf_counter() - t0))

    cache.load_or_build = timed_load_or_build
    points = []
    for flat in sweep.trials():
        with tempfile.TemporaryDirectory() as store, tempfile.TemporaryDirectory() as data_cache:
            os.environ[cache.ENV_VAR] = data_cache
            nested = nest(flat)
            if os.environ.get("BENCH_NAIVE_RECIPE") == "plain":
                for name in ("pretrain", "finetune"):
                    nested[name] = {**nested.get(name, {}), **PLAIN}
            cfg = TrialConfig.model_validate({**nested, "threads": 1, "store": store})
            n_gen = len(gen_times)
            t0 = time.perf_counter()
            final = run_finetune(cfg)
            wall = time.perf_counter() - t0
            metas = [json.loads(p.read_text()) for p in Path(store).glob("*/meta.json")]
            gens = gen_times[n_gen:]
            src_gen = sum(dt for name, dt in gens if name != cfg.target)  # generated inside the pretraining
            points.append({
                "key": point_key(flat), "iid_auc": final["iid_auc"], "ood_auc": final["ood_auc"],
                "wall_s": wall, "generation_s": sum(dt for _, dt in gens), "n_generations": len(gens),
                # pretraining alone: the backbone step less the source data generation inside it
                "pretrain_s": final["time_backbone_s"] - src_gen, "n_pretrainings": len(metas),
                "time_backbone_s": final["time_backbone_s"], "time_finetune_s": final["time_finetune_s"],
                "time_psd_s": final["time_psd_s"], "pretrain_key": final["pretrain_key"],
            })
            print(f"naive {points[-1]['key']}: {wall:.1f} s", file=sys.stderr, flush=True)
    out_file.write_text(json.dumps(points))


def run_naive(grid_file: Path, work: Path, recipe: str) -> tuple[float, list[dict]]:
    out = work / "naive.json"
    env = dict(os.environ)
    env.pop("SPECTRAL_RAY_STORE", None)
    env["BENCH_NAIVE_RECIPE"] = recipe
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--naive-worker", str(grid_file), str(out)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"naive script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.loads(out.read_text())


# ----------------------------------------------------------------------------------- ours


def run_ours(sweep_file: Path, work: Path, rep: int) -> tuple[float, list[dict], str]:
    storage, data_cache = work / f"results{rep}", work / f"cache{rep}"
    wall, stdout = run_sweep_cli(sweep_file, storage, data_cache)
    return wall, trial_results(storage / "bench-sweep-vs-naive"), stdout


def _compare_metrics(naive_pts: list, ours_trials: list, n_points: int, naive_recipe: str) -> None:
    """Same metrics per grid point? Printed per point, then the count."""
    ours_by_key = {point_key(t["config"]): t["final"] for t in ours_trials}
    print("\n# per grid point (last repetition): iid_auc / ood_auc, naive vs sweep")
    mismatches = 0
    for p in naive_pts:
        key = tuple(p["key"])
        o = ours_by_key[key]
        same = p["iid_auc"] == o["iid_auc"] and p["ood_auc"] == o["ood_auc"]
        mismatches += not same
        print(f"{str(key):<28} naive {p['iid_auc']:.4f} / {p['ood_auc']:.4f}   sweep {o['iid_auc']:.4f} / "
              f"{o['ood_auc']:.4f}   {'identical' if same else 'DIFFERENT'}")
    print(f"# metrics identical on {n_points - mismatches}/{n_points} grid points (naive recipe: {naive_recipe})")
    if mismatches and naive_recipe == "plain":
        diffs = [abs(p[m] - ours_by_key[tuple(p["key"])][m]) for p in naive_pts for m in ("iid_auc", "ood_auc")]
        print(f"# plain fp32 baseline: mean |ΔAUC| {sum(diffs) / len(diffs):.4f}, max {max(diffs):.4f} "
              "(compare with the seed noise in bench/levers.py)")
    elif mismatches:
        print("# the same recipe on both sides should give identical metrics (training is deterministic on the "
              "CPU with 1 thread): a DIFFERENCE is a bug to chase (BENCHMARKS.md, 'the cause was the input's strides')")


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--naive-worker", nargs=2, type=Path, metavar=("GRID_JSON", "OUT_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sources", nargs="+", default=["natural", "medical"])
    ap.add_argument("--degradations", nargs="+", type=float, default=[0.0, 1.0])
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--source-n", type=int, default=3000)
    ap.add_argument("--target-n", type=int, default=200)
    ap.add_argument("--psd-images", type=int, default=32)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load below this (0: don't)")
    ap.add_argument("--target", type=float, default=6.0)
    ap.add_argument("--naive-recipe", choices=("same", "plain"), default="same",
                    help="the baseline's recipe: the sweep's own (identical metrics) or a plain fp32 script's")
    return ap.parse_args()


def main() -> None:
    args = _parse_args()
    if args.naive_worker:
        naive_worker(*args.naive_worker)
        return

    os.environ["RAY_AUTH_MODE"] = "disabled"
    header("bench/sweep_vs_naive.py — spectral-ray sweep vs a sequential script, same grid and seeds")
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-vs-naive-"))
    params = grid_params(args)
    sweep_file = work / "sweep.yaml"
    write_sweep(sweep_file, "bench-sweep-vs-naive", params, max_concurrent=args.max_concurrent, cpu=1)
    from spectral_ray.config import load_sweep

    sweep = load_sweep(sweep_file, check_storage=False)
    grid_file = work / "grid.json"
    grid_file.write_text(json.dumps(sweep.model_dump(mode="json")))
    n_points = sweep.num_trials()
    print(f"# grid: {len(args.sources)} sources × {len(args.degradations)} degradations × {len(args.folds)} folds = "
          f"{n_points} points; {args.model}, {args.size} px, source_n {args.source_n}, target_n {args.target_n}, "
          f"pretrain {args.pretrain_epochs} ep, finetune {args.finetune_epochs} ep, psd_images {args.psd_images}; "
          f"sweep: max_concurrent {args.max_concurrent}, 1 CPU per trial")

    loads, naive_walls, ours_walls = [], [], []
    naive_pts = ours_trials = stdout = None
    for rep in range(args.repeats):
        loads.append(wait_for_quiet(args.max_load))
        # alternate the order so that drifting background load hits both alike
        first_naive = rep % 2 == 0
        for which in (("naive", "ours") if first_naive else ("ours", "naive")):
            if which == "naive":
                w, naive_pts = run_naive(grid_file, work, args.naive_recipe)
                naive_walls.append(w)
            else:
                w, ours_trials, stdout = run_ours(sweep_file, work, rep)
                ours_walls.append(w)
            print(f"# rep {rep}: {which} {w:.1f} s", flush=True)

    _compare_metrics(naive_pts, ours_trials, n_points, args.naive_recipe)

    naive_s, ours_s = median(naive_walls), median(ours_walls)
    ratio = naive_s / ours_s
    print(f"\n{'wall-clock, whole grid':<30} naive {naive_s:7.1f} s   sweep {ours_s:7.1f} s   ratio {ratio:5.2f}×   "
          f"target ≥ {args.target:.0f}×: {'met' if ratio >= args.target else 'NOT met'}   "
          f"(median of {args.repeats}; load at start {', '.join(f'{x:.2f}' for x in loads)})")

    # where the gain comes from, from the baseline's measured parts
    n_pre_naive = sum(p["n_pretrainings"] for p in naive_pts)
    pre_s = sum(p["pretrain_s"] for p in naive_pts)
    gen_s = sum(p["generation_s"] for p in naive_pts)
    n_gen_naive = sum(p["n_generations"] for p in naive_pts)
    n_pre_ours = len({t["final"]["pretrain_key"] for t in ours_trials})
    line = [ln for ln in stdout.splitlines() if "pretrainings in this run" in ln]
    n_gen_ours = len(args.sources) + 1  # one source dataset per source, one target set (the cache)
    pre_saved = pre_s - pre_s / n_pre_naive * n_pre_ours
    gen_saved = gen_s - gen_s / n_gen_naive * n_gen_ours
    rest_serial = naive_s - pre_saved - gen_saved
    ideal_parallel = rest_serial / args.max_concurrent
    ours_sum = {k: sum(t["final"].get(k) or 0 for t in ours_trials)
                for k in ("time_total_s", "time_backbone_s", "time_finetune_s", "time_psd_s")}
    print("\n# where the time goes")
    print(f"pretrainings:      naive {n_pre_naive} ({pre_s:.1f} s in all)   sweep {n_pre_ours}   "
          f"{'[' + line[-1].strip() + ']' if line else ''}")
    print(f"data generations:  naive {n_gen_naive} ({gen_s:.1f} s in all)   sweep {n_gen_ours} (cache; later loads take ms)")
    print(f"naive {naive_s:.1f} s = pretraining {pre_s:.1f} + data generation {gen_s:.1f} + fine-tune/eval/PSD/"
          f"imports/start-up {naive_s - pre_s - gen_s:.1f}")
    print(f"saved by pretrain-once: {pre_saved:.1f} s;  by the data cache: {gen_saved:.1f} s;  "
          f"left if run serially: {rest_serial:.1f} s (ratio {naive_s / rest_serial:.2f}× from these two alone)")
    print(f"with {args.max_concurrent} trials side by side that is ideally {ideal_parallel:.1f} s; measured sweep "
          f"{ours_s:.1f} s, so Ray start-up, scheduling and contention cost ≈ {ours_s - ideal_parallel:.1f} s")
    print(f"sweep trials' own timings (sums over {len(ours_trials)} trials): Ray time_total_s "
          f"{ours_sum['time_total_s']:.1f}, backbone wait/train {ours_sum['time_backbone_s']:.1f}, fine-tune "
          f"{ours_sum['time_finetune_s']:.1f}, final PSD {ours_sum['time_psd_s']:.1f}")
    print(f"# work dir: {work}")


if __name__ == "__main__":
    main()
