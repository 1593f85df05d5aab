"""Where a fine-tune trial's time goes, phase by phase, in-process (no Ray).

Runs ``run_finetune`` on grid points of a sweep file (default: the README's main job) with the
TensorBoard writer and a head checkpoint on, as the trainable does, and times each phase as
*exclusive* time (a phase nested in another is subtracted from it): backbone (store lookup or
pretraining), data (target generation/cache load, artifact, splits), starting model, priority
before (probe), train steps, per-epoch evaluation (val / I.I.D. / O.O.D. sets), per-epoch
heat-map priority, final priority, TensorBoard, checkpoint. ``--recipe-baseline`` also runs the
same points with the recipe knobs reset to the pre-speed-up behaviour, in the same run, and
prints both profiles and the ratio.

    .venv/bin/python bench/profile_trial.py --points 4 --recipe-baseline

The first point pretrains its backbone into ``--store`` (a temp folder by default) outside the
timing; the timed runs read it from the store. ``--project K`` also prints the whole sweep's
projected wall-clock with K trials side by side, from the measured per-trial and per-pretraining
seconds (in-process: add Ray's per-trial overhead, BENCHMARKS.md). On a GPU machine this times a
slice of any sweep (trials pick CUDA when it is there):

    python bench/profile_trial.py --sweep sweeps/embedded-paper.yaml --points 8 --project 8
    # paper.yaml's model, size and recipe on embedded data (paper.yaml itself needs its datasets):
    python bench/profile_trial.py --sweep sweeps/embedded-paper.yaml --points 4 --project 4 \
        --set model=resnet50 --set size=224 --set finetune_preset=lab --set finetune.epochs=30 --set source_n=2000
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, header, load_now  # noqa: E402

# (phase, module, attribute): the functions each phase's time is spent in
PHASES = [
    ("backbone", "spectral_ray.experiment", "get_backbone"),
    ("data", "spectral_ray.experiment", "trial_splits"),
    ("starting model", "spectral_ray.experiment", "starting_model"),
    ("priority before (glue)", "spectral_ray.experiment", "_priorities_before"),
    ("train steps", "spectral_ray.training._Loop", "train_epoch"),
    ("epoch evaluation", "spectral_ray.training", "_evaluate_epoch"),
    ("epoch report (heat-map priority)", "spectral_ray.experiment._EpochReporter", "__call__"),
    ("learning priority (before, per epoch, final)", "spectral_ray.spectrum", "learning_priority"),
    ("tensorboard", "spectral_ray.experiment._EpochReporter", "finish"),
    ("checkpoint", "spectral_ray.models", "save_head"),
]

# the recipe of the code before the speed-up (issue 15): every set evaluated every epoch
BASELINE_RECIPE = {"bf16": False, "channels_last": False, "small_map_conv_pixels": 0, "eval_sets_every": 1}


class PhaseTimer:
    """Exclusive wall-clock seconds per phase: time spent in a nested phase counts for it only."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [phase, start, nested seconds]

    def wrap(self, phase: str, fn):
        timer = self

        def timed(*args, **kwargs):
            timer._stack.append([phase, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                name, start, nested = timer._stack.pop()
                total = time.perf_counter() - start
                timer.seconds[name] += total - nested
                if timer._stack:
                    timer._stack[-1][2] += total

        return timed


@contextlib.contextmanager
def instrumented(timer: PhaseTimer):
    """Patch every phase's function with a timed wrapper; restored on exit."""
    import importlib

    saved = []
    for phase, where, attr in PHASES:
        mod_name, _, cls_name = where.partition("._") if "._" in where else (where, "", "")
        owner = importlib.import_module(mod_name)
        if cls_name:
            owner = getattr(owner, "_" + cls_name)
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, timer.wrap(phase, getattr(owner, attr)))
    try:
        yield
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)


def trial_configs(sweep_path: Path, n_points: int, store: str, recipe_over: dict, params: dict) -> list:
    from spectral_ray.config import TrialConfig, load_sweep
    from trainables.launcher import grid_points

    points = grid_points(load_sweep(sweep_path, param_overrides=params))[:n_points]
    out = []
    for p in points:
        p = {**p, "store": store, "finetune": {**p["finetune"], **recipe_over}}
        out.append(TrialConfig.model_validate(p))
    return out


def profile(cfgs: list, workdir: Path) -> tuple[dict[str, float], float, list[dict]]:
    """Per-phase seconds summed over the trials, total wall-clock, and each trial's final metrics."""
    from spectral_ray.experiment import run_finetune

    timer = PhaseTimer()
    finals = []
    t0 = time.perf_counter()
    with instrumented(timer):
        for i, cfg in enumerate(cfgs):
            tb = workdir / f"tb{i}"
            finals.append(run_finetune(cfg, tensorboard_dir=tb, checkpoint_path=workdir / f"head{i}.pt",
                                       checkpoint="head"))
    total = time.perf_counter() - t0
    return dict(timer.seconds), total, finals


def print_profile(title: str, seconds: dict[str, float], total: float, n: int) -> None:
    print(f"\n{title}: {n} trials, {total:.1f} s wall-clock ({total / n:.2f} s per trial)")
    rest = total - sum(seconds.values())
    for phase, _, _ in PHASES:
        s = seconds.get(phase, 0.0)
        print(f"  {phase:<34} {s:8.2f} s  {100 * s / total:5.1f} %")
    print(f"  {'other (config, metrics, glue)':<34} {rest:8.2f} s  {100 * rest / total:5.1f} %")


def print_projection(sweep_path: Path, params: dict, per_trial_s: float, pretrain_s: list[float],
                     concurrent: int) -> None:
    """The whole grid's wall-clock from the slice: (trials × s/trial + backbones × s/pretraining) / K."""
    from spectral_ray.config import TrialConfig, load_sweep
    from trainables.launcher import grid_points

    points = grid_points(load_sweep(sweep_path, param_overrides=params))
    backbones = {TrialConfig.model_validate(p).backbone().key() for p in points
                 if p.get("source", "none") != "none"}
    pre = statistics.mean(pretrain_s) if pretrain_s else float("nan")
    total = (len(points) * per_trial_s + len(backbones) * (pre if pretrain_s else 0)) / concurrent
    print(f"\nprojection for {sweep_path.name}: {len(points)} trials × {per_trial_s:.2f} s + {len(backbones)} "
          f"pretrainings × {pre:.1f} s (measured on this slice: {len(pretrain_s)}), {concurrent} side by side "
          f"→ {total / 60:.1f} min in-process (+ Ray's per-trial overhead × {len(points)} / {concurrent})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(REPO / "sweeps" / "embedded-quick.yaml"))
    ap.add_argument("--points", type=int, default=4, help="first N grid points of the sweep")
    ap.add_argument("--store", default=None, help="backbone store (default: a temp folder)")
    ap.add_argument("--recipe-baseline", action="store_true",
                    help=f"also run the points with {BASELINE_RECIPE} (the code before the speed-up)")
    ap.add_argument("--project", type=int, default=0, metavar="K",
                    help="print the sweep's projected wall-clock with K trials side by side")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter of every point, as `spectral-ray sweep --set` does")
    args = ap.parse_args(argv)
    import yaml

    params = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}

    import torch

    torch.set_num_threads(1)
    header("profile of fine-tune trials, per phase (exclusive wall-clock)")
    print(f"# sweep {args.sweep}, first {args.points} points; load at start {load_now():.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "store")
        from spectral_ray.experiment import get_backbone

        pretrain_s = []
        for cfg in trial_configs(Path(args.sweep), args.points, store, {}, params):
            t0 = time.perf_counter()
            _, meta = get_backbone(cfg)  # pretrain outside the timing
            if time.perf_counter() - t0 > 1:  # trained here, not read from the store
                pretrain_s.append(meta.get("train_time_s") or time.perf_counter() - t0)
        runs = [("ours (the sweep's recipe)", {})]
        if args.recipe_baseline:
            runs.insert(0, ("baseline (every set every epoch)", BASELINE_RECIPE))
        results = {}
        for title, over in runs:
            work = Path(tmp) / title.split()[0]
            work.mkdir()
            seconds, total, finals = profile(trial_configs(Path(args.sweep), args.points, store, over, params), work)
            print_profile(title, seconds, total, len(finals))
            results[title] = (total, finals)
    if args.project:
        per_trial = results[runs[-1][0]][0] / args.points
        print_projection(Path(args.sweep), params, per_trial, pretrain_s, args.project)
    if len(results) == 2:
        (tb, fb), (to, fo) = results.values()
        same = sum(a["iid_auc"] == b["iid_auc"] and a["ood_auc"] == b["ood_auc"] for a, b in zip(fb, fo))
        print(f"\nratio baseline / ours: {tb / to:.2f}×; final iid/ood AUC identical on {same}/{len(fb)} trials")
        print("median |Δ ood_auc|:", statistics.median(abs(a["ood_auc"] - b["ood_auc"]) for a, b in zip(fb, fo)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
