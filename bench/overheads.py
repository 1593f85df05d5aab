"""What the system adds over the raw work it schedules: the training loop, the learning-priority
measurement, and Ray's per-trial overhead.

Run: .venv/bin/python bench/overheads.py [--repeats 3] [--max-load 1.5] [--part a b c]

(a) ``spectral_ray.training.fit`` vs a bare timm training loop (same model init, same data, same
    optimizer and batch size, 1 thread), images/s; target ≥ 0.9×.
(b) the learning-priority measurement as ``run_finetune`` does it (``psd_images`` test images
    before and after fine-tuning, and a 64-image priority per epoch for the TensorBoard heat map)
    as a fraction of one fine-tune epoch on the default ``ct_lesion`` split; target ≤ 5 %.
(c) Ray's per-trial overhead: a trivial function trainable that reports at once, and a real tiny
    fine-tune trial (``trainables.finetune``) vs ``run_finetune`` in-process (warm store/cache).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import header, median, wait_for_quiet  # noqa: E402

os.environ.setdefault("SPECTRAL_RAY_CACHE", str(Path(tempfile.gettempdir()) / "spectral-ray-bench-cache"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def default_split(size: int = 64, target: str = "ct_lesion", n: int | None = None, seed: int = 0):
    """The default fine-tuning split of a trial (TrialConfig defaults: band artifact, d = 0, fold 0)."""
    from spectral_ray.artifacts import get_artifact
    from spectral_ray.data import get_dataset
    from spectral_ray.protocol import make_splits

    params = {"size": size, "channels": 1, "seed": 0, **({"n": n} if n else {})}
    ds = get_dataset(target, progress=False, **params)
    return make_splits(ds, get_artifact("band"), 0.0, 0, seed)


def bare_loop(model, x, y, *, lr, weight_decay, batch_size, seed) -> None:
    """One epoch of the loop one writes by hand around a timm model."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    order = torch.randperm(len(x))
    for s in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[s : s + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def part_a(args) -> None:
    import timm

    from spectral_ray.training import Recipe, fit

    print("\n## (a) fit() vs a bare timm loop — images/s, 1 thread, batch 32, AdamW, one epoch of the default "
          "ct_lesion train split at 64 px (fresh copy of the same initial weights each run)")
    torch.set_num_threads(1)
    sp = default_split(64)
    x = torch.as_tensor(sp.train.images, dtype=torch.float32).contiguous()
    y = torch.as_tensor(sp.train.labels).long()
    bs = 32
    n_used = (len(x) // bs) * bs  # the bare loop drops the last partial batch; give fit the same images
    x, y = x[:n_used], y[:n_used]
    recipe = Recipe(epochs=1, batch_size=bs, lr=1e-3, weight_decay=0.05, num_threads=1)
    for name in args.models:
        torch.manual_seed(0)
        init = timm.create_model(name, pretrained=False, in_chans=1, num_classes=2)
        base_t, ours_t = [], []

        def run_base():
            m = copy.deepcopy(init)
            t0 = time.perf_counter()
            bare_loop(m, x, y, lr=1e-3, weight_decay=0.05, batch_size=bs, seed=0)
            return time.perf_counter() - t0

        def run_ours():
            m = copy.deepcopy(init)
            t0 = time.perf_counter()
            fit(m, (x.numpy(), y.numpy()), None, recipe, seed=0)
            return time.perf_counter() - t0

        run_base(), run_ours()  # warm-up
        for i in range(args.repeats):
            for fn, acc in ((run_base, base_t), (run_ours, ours_t)) if i % 2 == 0 else ((run_ours, ours_t), (run_base, base_t)):
                acc.append(fn())
        b, o = n_used / median(base_t), n_used / median(ours_t)
        r = o / b
        print(f"{name:<10} 64 px  bare timm loop {b:7.1f} img/s   fit() {o:7.1f} img/s   ratio {r:5.2f}×   "
              f"target ≥ 0.9×: {'met' if r >= 0.9 else 'NOT met'}   ({n_used} images, median of {args.repeats})")


def part_b(args) -> None:
    import timm

    from spectral_ray import spectrum
    from spectral_ray.config import DEFAULT_FINETUNE, TrialConfig
    from spectral_ray.training import Recipe, fit

    defaults = TrialConfig()
    model_name = defaults.model
    print(f"\n## (b) learning-priority cost vs one fine-tune epoch — default ct_lesion split, {model_name}, "
          f"{defaults.size} px, default fine-tune recipe {DEFAULT_FINETUNE}, 1 thread")
    torch.set_num_threads(1)
    sp = default_split(defaults.size)
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, in_chans=1, num_classes=2)
    recipe = Recipe.from_dict({**DEFAULT_FINETUNE, "epochs": 1, "num_threads": 1})
    eval_sets = {"iid": sp.test_iid, "ood": sp.test_ood}
    fit(copy.deepcopy(model), sp.train, sp.val, recipe, seed=0, eval_sets=eval_sets)  # warm-up
    epoch_t = []
    for _ in range(args.repeats):
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        h = fit(m, sp.train, sp.val, recipe, seed=0, eval_sets=eval_sets)
        epoch_t.append(time.perf_counter() - t0)
    epoch = median(epoch_t)
    train_only = h["epochs"][0]["epoch_time_s"]
    print(f"one fine-tune epoch (train {len(sp.train)} + evaluate val {len(sp.val)}, iid/ood {len(sp.test_iid)} each): "
          f"{epoch:.2f} s")
    test = sp.test_iid
    sel = np.random.default_rng(0).permutation(len(test))
    times = {}
    for n in sorted({defaults.psd_images, 128, 64, 32}, reverse=True):
        imgs, labs = test.images[sel[:n]], test.labels[sel[:n]]
        spectrum.learning_priority(m, imgs, labs)  # warm-up
        times[n] = median([_timed(lambda: spectrum.learning_priority(m, imgs, labs)) for _ in range(args.repeats)])
        n_eff = min(n, len(test))
        print(f"learning_priority on {n_eff:3d} test images (asked {n:3d}): {times[n]:.3f} s = {times[n] / epoch:6.1%} of an epoch")
    bf = median([_timed(lambda: spectrum.learning_priority(m, test.images[sel[:64]], test.labels[sel[:64]],
                                                           autocast_dtype=torch.bfloat16)) for _ in range(args.repeats)])
    print(f"learning_priority on  64 images, bf16 autocast forward (spectrum still fp32): {bf:.3f} s = {bf / epoch:6.1%}")
    per_epoch = times[64] / epoch
    epochs = DEFAULT_FINETUNE["epochs"]
    p = defaults.psd_images
    trial_cost = 2 * times[p] + epochs * times[64]
    print(f"per epoch (heat map, 64 images): {per_epoch:.1%} of an epoch   target ≤ 5 %: "
          f"{'met' if per_epoch <= 0.05 else 'NOT met'}")
    print(f"per trial (before + after on psd_images={p}, + {epochs} × 64 for the heat map): {trial_cost:.2f} s = "
          f"{trial_cost / (epochs * epoch):.1%} of {epochs} fine-tune epochs   target ≤ 5 %: "
          f"{'met' if trial_cost / (epochs * epoch) <= 0.05 else 'NOT met'}")
    for k, n in ((2, 64), (epochs, 64), (epochs, 32)):
        alt = 2 * times[p] + (epochs // k) * times[n]
        print(f"  variant: heat map every {k} epochs on {n} images: {alt / (epochs * epoch):.1%}")
    for n in (128, 64):
        alt = 2 * times[n] + epochs * times[64]
        print(f"  variant: psd_images={n} (+ heat map every epoch): {alt / (epochs * epoch):.1%}")
    print(f"(epoch = train {train_only:.2f} s incl. evaluation as fit reports it; the learning priority is one "
          f"forward + input-gradient backward per image, ≈ a training step per image)")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def part_c(args) -> None:
    import ray
    from ray import tune

    from spectral_ray.config import TrialConfig
    from spectral_ray.experiment import run_finetune

    print("\n## (c) Ray per-trial overhead on this machine (2 CPUs, 1 CPU per trial)")
    work = Path(tempfile.mkdtemp(prefix="bench-overheads-"))
    cfg = TrialConfig(size=32, source_n=300, target_n=200, psd_images=32, pretrain={"epochs": 1},
                      finetune={"epochs": 2}, store=str(work / "store"), threads=1)
    # warm the store and the data cache, then time the in-process trial (same work as the trainable:
    # TensorBoard heat map + checkpoint)
    run_finetune(cfg)
    inproc = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        run_finetune(cfg, tensorboard_dir=work / f"tb{i}", checkpoint_path=work / f"ck{i}.pt")
        inproc.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_init = time.perf_counter() - t0
    print(f"ray.init (local, 2 CPUs): {ray_init:.1f} s")

    class Timeline(tune.Callback):
        def __init__(self):
            self.start, self.first = {}, {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.start[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.first.setdefault(trial.trial_id, time.time())

    def trivial(config):
        tune.report({"x": config["i"]})

    def run(trainable, space, k, concurrent, name, reuse=False):
        tl = Timeline()
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrent, reuse_actors=reuse),
            run_config=tune.RunConfig(name=name, storage_path=str(work / "ray"), callbacks=[tl], verbose=0),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        assert not grid.errors, grid.errors
        lat = [tl.first[t] - tl.start[t] for t in tl.first]
        return wall, lat, [r.metrics for r in grid]

    k = max(4, args.repeats + 1)
    for conc in (1, 2):
        wall, lat, _ = run(trivial, {"i": tune.grid_search(list(range(k)))}, k, conc, f"trivial{conc}")
        got = []
        trivial_inproc = _timed(lambda: [got.append({"x": i}) for i in range(k)])  # the same work in-process
        print(f"trivial trainable × {k}, max_concurrent {conc}: Tuner.fit {wall:.1f} s = {wall / k:.2f} s per trial; "
              f"trial start → first report median {median(lat):.2f} s (in-process: {trivial_inproc * 1e6 / k:.1f} µs)")
    from trainables.finetune import finetune

    # the same trial `repeats` times (a grid over one seed value, repeated: TrialConfig allows no extra key)
    reps = max(2, args.repeats)
    ip = median(inproc)
    print(f"run_finetune in-process (32 px, warm store/cache, with TensorBoard heat map + checkpoint like the "
          f"trainable): {ip:.2f} s (median of {len(inproc)})")
    for reuse in (False, True):
        wall, lat, metrics = run(finetune, {**cfg.model_dump(mode="json"), "seed": tune.grid_search([0] * reps)},
                                 reps, 1, f"finetune-reuse{int(reuse)}", reuse=reuse)
        tt = median([m["time_total_s"] for m in metrics])
        print(f"real tiny finetune trial × {len(metrics)}, max_concurrent 1, reuse_actors={reuse}: Ray time_total_s "
              f"median {tt:.2f} s ({tt - ip:+.2f} s, {tt / ip:.2f}× in-process); Tuner.fit {wall:.1f} s = "
              f"{wall / len(metrics):.2f} s per trial ({wall / len(metrics) / ip:.2f}× in-process); "
              f"trial start → first report {median(lat):.2f} s")
    ray.shutdown()
    _import_cost(args)


def _import_cost(args) -> None:
    """What a fresh worker process pays before the trial's first line runs: the imports."""
    import subprocess

    def py(code):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
        return time.perf_counter() - t0

    bare = median([py("pass") for _ in range(max(1, args.repeats))])
    imp = median([py("import trainables.finetune, spectral_ray.experiment, spectral_ray.tensorboard, timm, "
                     "spectral_ray.data, spectral_ray.protocol") for _ in range(max(1, args.repeats))])
    print(f"fresh interpreter: {bare:.2f} s bare, {imp:.2f} s with the finetune trainable's imports "
          f"(torch, timm, ray, spectral_ray) — paid again by every trial that starts in a new worker process")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet10t"])
    ap.add_argument("--part", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load below this (0: don't)")
    args = ap.parse_args()
    header("bench/overheads.py — training loop, learning-priority cost, Ray per-trial overhead")
    for part in args.part:
        wait_for_quiet(args.max_load)
        {"a": part_a, "b": part_b, "c": part_c}[part](args)


if __name__ == "__main__":
    main()
