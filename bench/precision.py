"""bf16 autocast and channels_last vs fp32 on the training step, and what they do to the AUCs.

Run: .venv/bin/python bench/precision.py [--repeats 3] [--max-load 1.5]

Throughput: ``spectral_ray.training.fit`` for one epoch of the default ``ct_lesion`` train split
at 64 px, 1 thread, with ``Recipe(bf16=..., channels_last=...)`` — the same recipe keys a sweep
sets as ``finetune.bf16`` / ``finetune.channels_last`` (and ``pretrain.*`` for pretraining).
Accuracy: ``run_finetune`` of the same trials (same backbone from a warm store, same seeds) with
fp32 and with bf16 + channels_last fine-tuning; the I.I.D./O.O.D. AUC differences and the
learning priorities' centroids. Learning priorities are always computed in fp32
(``spectral_ray.spectrum.learning_priority`` runs without autocast unless asked, accumulates
in float64 and returns float32), whatever the recipe trained with.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import header, median, wait_for_quiet  # noqa: E402
from bench.overheads import default_split  # noqa: E402  (also sets a bench data cache)

VARIANTS = (("fp32", False, False), ("channels_last", False, True), ("bf16", True, False),
            ("bf16+channels_last", True, True))


def throughput(args) -> None:
    import timm

    from spectral_ray.training import Recipe, fit

    torch.set_num_threads(1)
    sp = default_split(64)
    n = len(sp.train)
    print(f"\n## training step: one epoch of {n} images (ct_lesion, 64 px), batch 32, AdamW, 1 thread, "
          f"median of {args.repeats} (order rotated per repetition)")
    for name in args.models:
        torch.manual_seed(0)
        init = timm.create_model(name, pretrained=False, in_chans=1, num_classes=2)
        times: dict[str, list[float]] = {v[0]: [] for v in VARIANTS}

        def run(bf16, cl):
            m = copy.deepcopy(init)
            rec = Recipe(epochs=1, batch_size=32, bf16=bf16, channels_last=cl, num_threads=1)
            t0 = time.perf_counter()
            fit(m, sp.train, None, rec, seed=0)
            return time.perf_counter() - t0

        for _, bf16, cl in VARIANTS:  # warm-up (oneDNN kernels are built on first use)
            run(bf16, cl)
        for r in range(args.repeats):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
            for label, bf16, cl in order:
                times[label].append(run(bf16, cl))
        base = n / median(times["fp32"])
        cells = [f"fp32 {base:6.1f} img/s"]
        for label, _, _ in VARIANTS[1:]:
            ips = n / median(times[label])
            cells.append(f"{label} {ips:6.1f} img/s ({ips / base:4.2f}×)")
        print(f"{name:<10} " + "   ".join(cells))


def accuracy(args) -> None:
    from spectral_ray.config import TrialConfig
    from spectral_ray.experiment import run_finetune

    torch.set_num_threads(1)
    store = Path(tempfile.mkdtemp(prefix="bench-precision-store-"))
    base = dict(size=64, source="natural", source_n=args.source_n, psd_images=args.psd_images, degradation=0.5,
                pretrain={"epochs": 1}, store=str(store), threads=1)
    print(f"\n## short fine-tune, fp32 vs bf16+channels_last fine-tuning (same backbone, same seeds): resnet10t, "
          f"64 px, ct_lesion + band shortcut at d = 0.5, {args.finetune_epochs} epochs, folds {args.folds}")
    rows = []
    for fold in args.folds:
        res = {}
        for label, bf16, cl in (("fp32", False, False), ("bf16+cl", True, True)):
            cfg = TrialConfig(**base, fold=fold, finetune={"epochs": args.finetune_epochs, "bf16": bf16, "channels_last": cl})
            t0 = time.perf_counter()
            res[label] = run_finetune(cfg)
            res[label]["wall"] = time.perf_counter() - t0
        a, b = res["fp32"], res["bf16+cl"]
        rows.append((fold, a, b))
        print(f"fold {fold}: iid_auc {a['iid_auc']:.4f} → {b['iid_auc']:.4f} ({b['iid_auc'] - a['iid_auc']:+.4f})   "
              f"ood_auc {a['ood_auc']:.4f} → {b['ood_auc']:.4f} ({b['ood_auc'] - a['ood_auc']:+.4f})   "
              f"centroid_finetuned {a['centroid_finetuned']:.4f} → {b['centroid_finetuned']:.4f}   "
              f"fine-tune {a['time_finetune_s']:.1f} s → {b['time_finetune_s']:.1f} s "
              f"({a['time_finetune_s'] / b['time_finetune_s']:.2f}×)")
    d_iid = [abs(b["iid_auc"] - a["iid_auc"]) for _, a, b in rows]
    d_ood = [abs(b["ood_auc"] - a["ood_auc"]) for _, a, b in rows]
    print(f"mean |ΔAUC|: iid {np.mean(d_iid):.4f}, ood {np.mean(d_ood):.4f} over {len(rows)} fold(s)")


def options_check() -> None:
    """The options are sweep keys, and spectra stay fp32 whatever the recipe."""
    import timm

    from spectral_ray import spectrum
    from spectral_ray.config import parse_sweep
    from spectral_ray.config import TrialConfig

    raw = {"name": "precision", "params": {"finetune.bf16": {"grid": [False, True]}, "finetune.channels_last": True,
                                           "pretrain.bf16": True, "pretrain.channels_last": True}}
    sweep = parse_sweep(raw, "inline", check_storage=False)
    trials = sweep.trials()
    print("\n## sweep options")
    print(f"sweep params {raw['params']} → {len(trials)} valid trials, e.g. {trials[-1]}")
    k32 = TrialConfig().backbone().key()[:12]
    k16 = TrialConfig(pretrain={"bf16": True}).backbone().key()[:12]
    print(f"pretrain.bf16 changes the backbone store key ({k32} → {k16}): a bf16 backbone is its own entry")
    torch.manual_seed(0)
    m = timm.create_model("resnet10t", pretrained=False, in_chans=1, num_classes=2).to(memory_format=torch.channels_last)
    x, y = torch.rand(8, 1, 32, 32), torch.randint(0, 2, (8,))
    p = spectrum.learning_priority(m, x, y)
    print(f"learning_priority of a channels_last model: dtype {p.dtype} (gradients taken in fp32, spectra "
          f"accumulated in float64); run_finetune never passes autocast_dtype")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet10t"])
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--source-n", type=int, default=600)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--psd-images", type=int, default=64)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load below this (0: don't)")
    args = ap.parse_args()
    header("bench/precision.py — bf16 autocast / channels_last vs fp32")
    options_check()
    wait_for_quiet(args.max_load)
    throughput(args)
    if not args.skip_accuracy:
        wait_for_quiet(args.max_load)
        accuracy(args)


if __name__ == "__main__":
    main()
