"""What a CUDA GPU does with the project's training paths: one prepared script for a lent GPU.

Run: python bench/gpu.py [--out DIR] [--quick]        (where torch sees a GPU)
     python bench/gpu.py --device cpu --quick          (a dry run of every code path on a CPU)

(a) environment: torch, CUDA, cuDNN, the GPU.
(b) ResNet-50 at 224 px (3 channels, 2 classes, random images, batch 128): training images/s of
    ``training.fit`` for one epoch in fp32, channels_last, bf16 and bf16 + channels_last, each
    against a bare timm loop with the same precision on the same tensors (the baseline in the
    same run), with cuDNN's defaults and with deterministic kernels as fit runs them (what
    reproducibility costs). fit end to end includes its one host→device copy of the data; its
    loop alone is fit's own ``epoch_time_s``; target ≥ 0.9× as on the CPU (BENCHMARKS.md).
(c) ``spectrum.learning_priority`` of that model at 224 px: seconds per image against a
    training step's seconds per image.
(d) ``run_finetune`` on the GPU (resnet18, 64 px, ct_lesion + band shortcut at d = 0.5, two
    folds): fp32 vs bf16 + channels_last fine-tuning, |ΔAUC|; and fp32 run twice on fold 0 —
    does a GPU trial reproduce itself (``training.deterministic_kernels``)?
(e) Ray Tune on the GPU: ``spectral-ray sweep`` of a 12-trial grid (degradation × fold ×
    finetune.bf16) with ``resources: {cpu: 1, gpu: 0.25}`` (four trials share the GPU), then
    ``spectral-ray report``: every trial TERMINATED, each on which device, one pretraining.

Everything printed is also written to ``DIR/gpu.json`` (and the sweep's report to ``DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import median, trial_results  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
os.environ.setdefault("SPECTRAL_RAY_CACHE", str(WORK / "cache"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

VARIANTS = (("fp32", False, False), ("channels_last", False, True), ("bf16", True, False),
            ("bf16+channels_last", True, True))
RESULTS: dict = {}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> None:
    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "device": str(device),
           "python": sys.version.split()[0]}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark, conv_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_precision=torch.get_float32_matmul_precision())
    print("## (a) environment\n" + json.dumps(env, indent=1))
    RESULTS["environment"] = env


def bare_loop(model, x, y, *, batch_size: int, bf16: bool, channels_last: bool) -> None:
    """One epoch of the loop one writes by hand around a timm model (data already on the device)."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model.train()
    order = torch.randperm(len(x), device=x.device)
    for s in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[s : s + batch_size]
        xb = x[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def throughput(args, device: torch.device):
    import timm

    from spectral_ray.training import Recipe, deterministic_kernels, fit

    n, size, bs = args.images, args.size, args.batch_size
    print(f"\n## (b) {args.model} at {size} px, 3 channels: training images/s, one epoch of {n} random images, "
          f"batch {bs}, AdamW; fit() (deterministic kernels) vs a bare timm loop of the same precision, "
          f"median of {args.repeats}")
    g = torch.Generator().manual_seed(0)
    x_cpu = torch.rand(n, 3, size, size, generator=g)
    y_cpu = torch.randint(0, 2, (n,), generator=g)
    x, y = x_cpu.to(device), y_cpu.to(device)
    torch.manual_seed(0)
    init = timm.create_model(args.model, pretrained=False, in_chans=3, num_classes=2)
    rows = {}
    for label, bf16, cl in VARIANTS:
        def run_bare(deterministic: bool):
            m = copy.deepcopy(init).to(device)
            if cl:
                m = m.to(memory_format=torch.channels_last)
            sync(device)
            with deterministic_kernels(device) if deterministic else contextlib.nullcontext():
                t0 = time.perf_counter()
                bare_loop(m, x, y, batch_size=bs, bf16=bf16, channels_last=cl)
                sync(device)
                return time.perf_counter() - t0

        loop_s = []

        def run_fit():
            m = copy.deepcopy(init)
            sync(device)
            t0 = time.perf_counter()
            # numpy in, as a trial passes it: fit's one host→device copy of the data is in its time
            h = fit(m, (x_cpu.numpy(), y_cpu.numpy()), None,
                    Recipe(epochs=1, batch_size=bs, lr=1e-3, weight_decay=0.05, bf16=bf16, channels_last=cl),
                    seed=0, device=device)
            sync(device)
            loop_s.append(h["epochs"][0]["epoch_time_s"])  # the training loop alone
            return time.perf_counter() - t0

        runs = {"bare": lambda: run_bare(False), "bare_det": lambda: run_bare(True), "fit": run_fit}
        for fn in runs.values():  # warm-up: kernel selection, allocator
            fn()
        loop_s.clear()
        times = {k: [] for k in runs}
        for r in range(args.repeats):
            keys = list(runs)[r % 3:] + list(runs)[: r % 3]
            for k in keys:
                times[k].append(runs[k]())
        used = (n // bs) * bs
        ips = {k: used / median(v) for k, v in times.items()}
        ips["fit_loop"] = used / median(loop_s)
        rows[label] = {"bare_img_s": ips["bare"], "bare_deterministic_img_s": ips["bare_det"],
                       "fit_img_s": ips["fit"], "fit_loop_img_s": ips["fit_loop"],
                       "ratio": ips["fit"] / ips["bare"], "loop_ratio": ips["fit_loop"] / ips["bare_det"]}
        print(f"{label:<19} bare loop {ips['bare']:7.1f} img/s, deterministic cuDNN {ips['bare_det']:7.1f}   "
              f"fit() {ips['fit']:7.1f} img/s end to end ({ips['fit'] / ips['bare']:4.2f}× bare), "
              f"loop alone {ips['fit_loop']:7.1f} ({ips['fit_loop'] / ips['bare_det']:4.2f}× deterministic bare)")
    base = rows["fp32"]["fit_img_s"]
    print("fit() speed-up over fp32: " + ", ".join(f"{k} {v['fit_img_s'] / base:.2f}×" for k, v in rows.items()))
    RESULTS["throughput"] = {"model": args.model, "size": size, "images": n, "batch_size": bs, **rows}
    return init, x, y, rows


def priority_cost(args, device, init, x, y, rows) -> None:
    from spectral_ray import spectrum

    model = copy.deepcopy(init).to(device)
    k = min(args.psd_images, len(x))
    imgs, labs = x[:k], y[:k]
    spectrum.learning_priority(model, imgs, labs)  # warm-up
    times = []
    for _ in range(args.repeats):
        sync(device)
        t0 = time.perf_counter()
        p = spectrum.learning_priority(model, imgs, labs)
        sync(device)
        times.append(time.perf_counter() - t0)
    per_img = median(times) / k
    step_per_img = 1 / rows["fp32"]["fit_img_s"]
    print(f"\n## (c) learning_priority, {args.model} at {args.size} px, {k} images, fp32: {median(times):.3f} s = "
          f"{per_img * 1e3:.2f} ms/image = {per_img / step_per_img:.2f}× a fp32 training step per image "
          f"(spectrum dtype {p.dtype}, {p.shape[0]} bins)")
    RESULTS["learning_priority"] = {"images": k, "seconds": median(times), "per_image_vs_train_step": per_img / step_per_img}


def finetune_precision(args) -> None:
    from spectral_ray.config import TrialConfig
    from spectral_ray.experiment import run_finetune

    store = WORK / "store-d"
    base = dict(size=64, source="natural", source_n=args.source_n, model="resnet18", psd_images=128,
                degradation=0.5, artifact="band", artifact_omega=0.75, artifact_amplitude=0.2,
                pretrain={"epochs": 2}, store=str(store), threads=4)
    print(f"\n## (d) run_finetune on the device: resnet18, 64 px, natural source (n={args.source_n}, 2 epochs), "
          f"ct_lesion + band ω 0.75 amplitude 0.2 at d = 0.5, {args.finetune_epochs} epochs")
    rows = []
    for fold in args.folds:
        res = {}
        runs = [("fp32", False, False), ("bf16+cl", True, True)] + ([("fp32 again", False, False)] if fold == args.folds[0] else [])
        for label, bf16, cl in runs:
            cfg = TrialConfig(**base, fold=fold, finetune={"epochs": args.finetune_epochs, "bf16": bf16, "channels_last": cl})
            t0 = time.perf_counter()
            res[label] = run_finetune(cfg)
            res[label]["wall_s"] = time.perf_counter() - t0
        a, b = res["fp32"], res["bf16+cl"]
        row = {"fold": fold, "device": a.get("device"), "fp32": {k: a[k] for k in ("iid_auc", "ood_auc", "centroid_finetuned", "time_finetune_s", "wall_s")},
               "bf16_cl": {k: b[k] for k in ("iid_auc", "ood_auc", "centroid_finetuned", "time_finetune_s", "wall_s")}}
        print(f"fold {fold} on {a.get('device')}: iid {a['iid_auc']:.4f} → {b['iid_auc']:.4f} ({b['iid_auc'] - a['iid_auc']:+.4f})   "
              f"ood {a['ood_auc']:.4f} → {b['ood_auc']:.4f} ({b['ood_auc'] - a['ood_auc']:+.4f})   "
              f"centroid {a['centroid_finetuned']:.4f} → {b['centroid_finetuned']:.4f}   "
              f"fine-tune {a['time_finetune_s']:.1f} s → {b['time_finetune_s']:.1f} s (wall {a['wall_s']:.1f} s → {b['wall_s']:.1f} s)")
        if "fp32 again" in res:
            c = res["fp32 again"]
            same = all(a[k] == c[k] for k in ("iid_auc", "ood_auc", "val_auc", "psd_finetuned"))
            row["fp32_rerun"] = {k: c[k] for k in ("iid_auc", "ood_auc", "val_auc")}
            row["fp32_rerun_identical"] = same
            print(f"fold {fold} fp32 rerun: iid {c['iid_auc']:.6f} ood {c['ood_auc']:.6f} — AUCs and psd_finetuned "
                  f"{'identical' if same else 'DIFFERENT'} to the first run (iid {a['iid_auc']:.6f} ood {a['ood_auc']:.6f})")
        rows.append(row)
    d_iid = [abs(r["bf16_cl"]["iid_auc"] - r["fp32"]["iid_auc"]) for r in rows]
    d_ood = [abs(r["bf16_cl"]["ood_auc"] - r["fp32"]["ood_auc"]) for r in rows]
    print(f"mean |ΔAUC| bf16+cl vs fp32: iid {np.mean(d_iid):.4f}, ood {np.mean(d_ood):.4f} over {len(rows)} folds")
    RESULTS["finetune_precision"] = rows


def ray_sweep(args, out: Path | None) -> None:
    import yaml

    storage = WORK / "results"
    sweep = {
        "name": "gpu-check", "trainable": "finetune", "storage": str(storage),
        "resources": {"cpu": 1, "gpu": args.gpu_per_trial}, "max_concurrent": args.concurrent, "max_failures": 0,
        "params": {"degradation": {"grid": [0, 0.5, 1]}, "fold": {"grid": [0, 1]},
                   "finetune.bf16": {"grid": [False, True]},
                   "source": "natural", "source_n": args.source_n, "model": "resnet18", "size": 64,
                   "target": "ct_lesion", "artifact": "band", "artifact_omega": 0.75, "artifact_amplitude": 0.2,
                   "pretrain.epochs": 2, "finetune.epochs": args.finetune_epochs, "psd_images": 128,
                   "store": str(WORK / "store-e")},
    }
    if args.gpu_per_trial == 0:
        sweep["resources"].pop("gpu")
    path = WORK / "gpu-check.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    print(f"\n## (e) Ray Tune: {path.name}, 12 trials, resources {sweep['resources']}, max_concurrent {args.concurrent}")
    cli = [sys.executable, "-m", "spectral_ray.cli"]
    t0 = time.perf_counter()
    proc = subprocess.run([*cli, "sweep", str(path)], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    print(f"spectral-ray sweep: exit {proc.returncode} after {wall:.0f} s; last lines:\n" +
          "\n".join(proc.stdout.strip().splitlines()[-8:]) + ("\n" + proc.stderr[-3000:] if proc.returncode else ""))
    exp = storage / "gpu-check"
    trials = []
    for t in trial_results(exp) if exp.is_dir() else []:
        final = t["final"]
        trials.append({"trial": t["trial"][:40], "device": final.get("device"), "done": final.get("done"),
                       "iid_auc": final.get("iid_auc"), "ood_auc": final.get("ood_auc"),
                       "bf16": t["config"].get("finetune", {}).get("bf16"),
                       "time_finetune_s": final.get("time_finetune_s")})
    devices = sorted({str(t["device"]) for t in trials})
    done = sum(bool(t["done"]) for t in trials)
    stores = [p for p in (WORK / "store-e").rglob("*.pt")] if (WORK / "store-e").exists() else []
    print(f"{done}/{len(trials)} trials finished (12 expected); devices {devices}; backbone files in the store: {len(stores)}")
    for t in trials:
        print(f"  {t['trial']:<40} {t['device']!s:<7} bf16 {t['bf16']!s:<5} iid {t['iid_auc'] or float('nan'):.3f} "
              f"ood {t['ood_auc'] or float('nan'):.3f} fine-tune {t['time_finetune_s'] or float('nan'):.1f} s")
    rep = subprocess.run([*cli, "report", str(exp)] + (["--out", str(out)] if out else []),
                         capture_output=True, text=True, cwd=REPO)
    print(f"spectral-ray report: exit {rep.returncode}" + (f"\n{rep.stderr[-2000:]}" if rep.returncode else ""))
    RESULTS["ray_sweep"] = {"exit": proc.returncode, "wall_s": wall, "finished": done, "trials": trials,
                            "devices": devices, "report_exit": rep.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu.json and the sweep's report")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of every path")
    ap.add_argument("--parts", nargs="+", default=list("abcde"), choices=list("abcde"))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: torch sees no GPU (torch.cuda.is_available() is False); use --device cpu for a dry run")
    q = args.quick
    args.model, args.size = ("resnet10t", 32) if q else ("resnet50", 224)
    args.images, args.batch_size, args.repeats = (64, 16, 1) if q else (2048, 128, 3)
    args.psd_images = 16 if q else 64
    args.source_n, args.finetune_epochs, args.folds = (300, 1, [0]) if q else (1000, 4, [0, 1])
    args.gpu_per_trial = 0.25 if device.type == "cuda" else 0
    args.concurrent = 4 if device.type == "cuda" else 2
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        environment(device)
        if "b" in args.parts or "c" in args.parts:
            init, x, y, rows = throughput(args, device)
            if "c" in args.parts:
                priority_cost(args, device, init, x, y, rows)
            del x, y
        if "d" in args.parts:
            finetune_precision(args)
        if "e" in args.parts:
            ray_sweep(args, args.out)
    finally:
        RESULTS["wall_s"] = time.perf_counter() - t0
        if args.out:
            (args.out / "gpu.json").write_text(json.dumps(RESULTS, indent=1, default=str))
        print(f"\ntotal {RESULTS['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
