"""How the embedded pretraining sources differ: image spectra, and what a backbone learns from each.

Run (the pretraining part trains models: run it under the shared lock)::

    .venv/bin/python bench/source_spectra.py spectra [--n 2000] [--seeds 0 1] [--plot PNG]
    flock /work/heavy.lock .venv/bin/python bench/source_spectra.py pretrain [--seeds 0 1] [--json OUT]
    flock /work/heavy.lock .venv/bin/python bench/source_spectra.py timing [--n 10000]
    .venv/bin/python bench/source_spectra.py compare RESULTS.json [MORE.json …]

``spectra``: per source, per medical modality and per medical class, the mean radial PSD
(:func:`spectral_ray.data.preview.dataset_spectrum`) summarised by its log-log slope over
k = 1…32 and over the bands k = 1…8 (anatomy) and 16…32 (acquisition: noise floor, ringing,
truncation), and the unit-sum mass at k ≥ 16; across data seeds, so differences can be read
against the seed-to-seed spread.

``pretrain``: pretrains each source the way the quick sweep does (``sweeps/embedded-quick.yaml``:
resnet10t, 64 px, 3000 images, the default recipe of ``spectral_ray/config.py``, one thread per
run, two runs side by side) for each seed, without the backbone store, and prints per-epoch
validation accuracy, the pretrained learning priority's centroid (with and without DC), the TV
distance between the sources' mean priorities against the seed-to-seed TV spread, and the
validation accuracy on band-limited copies of the validation images (which frequencies the
trained model needs).

``timing``: wall-clock of generating the medical source (cache bypassed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BANDS = {"all": (1, 32), "low": (1, 8), "high": (16, 32)}
CLASS_BANDS = ((1, 2), (3, 4), (5, 8), (9, 16), (17, 32))  # k ranges for where class information lies
ABLATIONS = {"lowpass_k8": (0, 8), "lowpass_k16": (0, 16), "no_k_le_4": (5, 32)}  # kept |k| range


def spectrum_row(psd: np.ndarray) -> dict:
    from spectral_ray.spectrum import spectral_slope

    q = psd[1:] / psd[1:].sum()
    row = {f"slope_{b}": spectral_slope(psd, lo, hi) for b, (lo, hi) in BANDS.items()}
    row["mass_k16"] = float(q[15:].sum())
    return row


def _groups(name: str, ds) -> dict:
    """{label: image index} — the whole dataset, and for ``medical`` each modality and class."""
    out = {name: np.arange(len(ds))}
    if name == "medical":
        classes = np.asarray(ds.classes)[ds.labels]
        for m in ("ct", "mr"):
            out[f"medical/{m}"] = np.where(np.char.startswith(classes, m + "_"))[0]
        for c in ds.classes:
            out[f"medical/{c}"] = np.where(classes == c)[0]
    return out


def eta_squared(x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of the variance of ``x`` (n,) explained by ``labels`` (one-way ANOVA η²)."""
    means = {c: x[labels == c].mean() for c in np.unique(labels)}
    between = sum((labels == c).sum() * (m - x.mean()) ** 2 for c, m in means.items())
    return float(between / ((x - x.mean()) ** 2).sum())


def band_class_information(ds, name: str) -> dict[str, list[float]]:
    """η² of each image's log share of power (unit sum over k ≥ 1) in each of ``CLASS_BANDS``
    explained by its class: for
    ``natural`` the photograph, for ``medical`` the modality (CT vs MR) and the anatomy within a
    modality (mean over CT and MR). Says in which frequency band the class labels show."""
    from spectral_ray.spectrum import radial_psd

    psd = radial_psd(ds.images.mean(axis=1).astype(np.float64))
    psd = psd / psd[:, 1:].sum(1, keepdims=True)  # the spectrum's shape, not the image's contrast
    logs = np.stack([np.log(psd[:, lo : hi + 1].sum(1)) for lo, hi in CLASS_BANDS], 1)
    if name != "medical":
        return {f"{name}: class": [eta_squared(v, ds.labels) for v in logs.T]}
    classes = np.asarray(ds.classes)[ds.labels]
    modality = np.char.partition(classes, "_")[:, 0]
    anatomy = [[eta_squared(v[modality == m], classes[modality == m]) for v in logs.T] for m in ("ct", "mr")]
    return {"medical: modality": [eta_squared(v, modality) for v in logs.T], "medical: anatomy | modality": list(np.mean(anatomy, 0))}


def run_spectra(args) -> None:
    from spectral_ray.data import get_dataset
    from spectral_ray.data.preview import dataset_spectrum

    rows: dict[str, list[dict]] = {}
    mean_psd: dict[str, list[np.ndarray]] = {}
    info: dict[str, list[list[float]]] = {}
    for name, seed in itertools.product(("natural", "medical"), args.seeds):
        ds = get_dataset(name, n=args.n, seed=seed, size=64, progress=False)
        for label, eta in band_class_information(ds, name).items():
            info.setdefault(label, []).append(eta)
        for label, idx in _groups(name, ds).items():
            psd, _ = dataset_spectrum(ds.subset(idx), max_images=len(idx))
            rows.setdefault(label, []).append(spectrum_row(psd))
            mean_psd.setdefault(label, []).append(psd)
    keys = list(next(iter(rows.values()))[0])
    print(f"# n = {args.n} per source and seed, seeds {args.seeds}: mean (max − min over seeds)")
    print(f"{'':<22}" + "".join(f"{k:>20}" for k in keys))
    for label, rs in rows.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rs])
            cells.append(f"{v.mean():>12.3f} ({np.ptp(v):.3f})")
        print(f"{label:<22}" + "".join(cells))
    print("# where the class shows: η² of per-image log band share of power explained by the class, mean (max − min over seeds)")
    print(f"{'band k':<30}" + "".join(f"{f'{lo}-{hi}':>16}" for lo, hi in CLASS_BANDS))
    for label, etas in info.items():
        e = np.array(etas)
        print(f"{label:<30}" + "".join(f"{m:>9.3f} ({p:.3f})" for m, p in zip(e.mean(0), np.ptp(e, 0))))
    if args.plot:
        before = None if not args.before else {k: np.asarray(v) for k, v in json.loads(Path(args.before).read_text())["psd"].items()}
        plot_spectra({k: np.mean(v, 0) for k, v in mean_psd.items()}, args.plot, before)
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "class_information": info, "psd": {k: np.mean(v, 0).tolist() for k, v in mean_psd.items()}}, indent=1))


def plot_spectra(psd: dict[str, np.ndarray], out: str, before: dict[str, np.ndarray] | None = None) -> None:
    """Three panels: sources and modalities, medical classes, and each spectrum over natural's
    (all unit sum over k ≥ 1). ``before``: spectra of an earlier generator version, dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def unit(q):
        return np.asarray(q)[1:] / np.sum(np.asarray(q)[1:])

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    k = np.arange(1, 33)
    styles = {"natural": ("k", "-"), "medical": ("C3", "-"), "medical/ct": ("C0", "--"), "medical/mr": ("C2", "--")}
    nat = unit(psd["natural"])
    for label, (color, ls) in styles.items():
        axes[0].loglog(k, unit(psd[label]), ls, color=color, label=label)
        if label != "natural":
            axes[2].loglog(k, unit(psd[label]) / nat, ls, color=color, label=label)
    for label, q in (before or {}).items():
        if label in styles and label != "natural":
            color = styles[label][0]
            axes[0].loglog(k, unit(q), ":", color=color, lw=1, label=f"{label} (before)")
            axes[2].loglog(k, unit(q) / nat, ":", color=color, lw=1, label=f"{label} (before)")
    for label, q in psd.items():
        if label.count("_"):
            axes[1].loglog(k, unit(q), "--" if "/ct_" in label else ":", label=label.split("/")[1], lw=1.2)
    axes[1].loglog(k, nat, "k-", lw=1.5, label="natural")
    axes[2].axhline(1.0, color="k", lw=0.8)
    titles = ("sources and modalities", "medical classes", "relative to natural")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("radial frequency k (cycles / image)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=6.5, ncol=2 if ax is axes[1] else 1)
    axes[0].set_ylabel("mean power (unit sum, k ≥ 1)")
    axes[2].set_ylabel("power / natural's")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def band_limit(images: np.ndarray, k_lo: int, k_hi: int) -> np.ndarray:
    """Keep the radial frequencies k_lo ≤ |k| ≤ k_hi (cycles/image) of ``(n, C, N, N)`` images;
    the DC term is kept whenever k_lo is 0 (the image mean is restored otherwise)."""
    n = images.shape[-1]
    f = np.fft.fftfreq(n) * n
    r = np.hypot(f[:, None], f[None, :])
    keep = (r >= k_lo) & (r <= k_hi + 0.5)
    out = np.fft.ifft2(np.fft.fft2(images) * keep).real
    if k_lo > 0:
        out = out + images.mean(axis=(-2, -1), keepdims=True)
    return out.astype(np.float32)


def pretrain_one(source: str, seed: int) -> dict:
    """One backbone as the quick sweep pretrains it; its history, priority and band ablations."""
    import torch

    from spectral_ray import spectrum
    from spectral_ray.config import TrialConfig
    from spectral_ray.store import _source_dataset, _split, default_pretrain
    from spectral_ray.training import evaluate

    torch.set_num_threads(1)
    cfg = TrialConfig(source=source, seed=seed, source_n=3000, size=64, model="resnet10t", threads=1).backbone()
    t0 = time.time()
    model, hist = default_pretrain(cfg)
    ds = _source_dataset(cfg)
    _, va = _split(np.asarray(ds.labels), cfg.val_fraction, cfg.seed)
    x, y = ds.images[va], ds.labels[va]
    ablation = {name: evaluate(model, band_limit(x, lo, hi), y)["accuracy"] for name, (lo, hi) in ABLATIONS.items()}
    p = np.asarray(hist["learning_priority"])
    return {
        "source": source,
        "seed": seed,
        "val_accuracy": [e["val_accuracy"] for e in hist["epochs"]],
        "ablation_accuracy": ablation,
        "priority": p.tolist(),
        "centroid": spectrum.summarize(p)["centroid"],
        "centroid_nodc": spectrum.summarize(p, exclude_dc=True)["centroid"],
        "time_s": time.time() - t0,
    }


def tv(p, q) -> float:
    p, q = np.asarray(p) / np.sum(p), np.asarray(q) / np.sum(q)
    return 0.5 * float(np.abs(p - q).sum())


def group_label(r: dict) -> str:
    return r["source"] + (f" [{r['tag']}]" if r.get("tag") else "")


def run_pretrain(args) -> None:
    jobs = list(itertools.product(args.sources, args.seeds))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = [dict(r, tag=args.tag) for r in pool.map(pretrain_one, *zip(*jobs))]
    compare(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


def compare(results: list[dict]) -> None:
    """Per run: accuracy per epoch, centroid, band ablations; per pair of groups (source [tag]):
    TV distance of the mean priorities against the mean seed-to-seed TV within the two groups."""
    for r in results:
        acc = " ".join(f"{a:.3f}" for a in r["val_accuracy"])
        abl = " ".join(f"{k} {v:.3f}" for k, v in r["ablation_accuracy"].items())
        print(f"{group_label(r):<20} seed {r['seed']}: val acc/epoch {acc} | centroid {r['centroid']:.4f} "
              f"(no DC {r['centroid_nodc']:.4f}) | {abl} | {r['time_s']:.0f} s")
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(group_label(r), []).append(r)
    for name, rs in groups.items():
        c = np.array([r["centroid"] for r in rs])
        acc = np.array([r["val_accuracy"][-1] for r in rs])
        abl = " ".join(f"{k} {np.mean([r['ablation_accuracy'][k] for r in rs]):.3f}" for k in ABLATIONS)
        print(f"{name:<20} n={len(rs)}: final val acc {acc.mean():.3f} (range {acc.min():.3f}-{acc.max():.3f}), "
              f"centroid {c.mean():.4f} ± {c.std(ddof=1) if len(c) > 1 else float('nan'):.4f} | mean {abl}")
    for a, b in itertools.combinations(groups, 2):
        for dc, sl in (("", slice(None)), (" (no DC)", slice(1, None))):
            within = [tv(x["priority"][sl], y["priority"][sl]) for g in (a, b) for x, y in itertools.combinations(groups[g], 2)]
            pa = np.mean([r["priority"] for r in groups[a]], 0)[sl]
            pb = np.mean([r["priority"] for r in groups[b]], 0)[sl]
            print(f"TV({a}, {b}){dc} = {tv(pa, pb):.4f}; seed-to-seed TV {np.mean(within):.4f} → {tv(pa, pb) / np.mean(within):.1f}×")


def run_compare(args) -> None:
    compare([r for path in args.json for r in json.loads(Path(path).read_text())])


def run_timing(args) -> None:
    from spectral_ray.data import get_dataset

    t0 = time.perf_counter()
    get_dataset("medical", n=args.n, size=64, use_cache=False, progress=False)
    print(f"medical: {args.n} images at 64 px in {time.perf_counter() - t0:.1f} s (cache bypassed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("spectra")
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    s.add_argument("--plot", default=None)
    s.add_argument("--before", default=None, help="JSON of an earlier run (--json) to overlay on the plot")
    s.add_argument("--json", default=None)
    s.set_defaults(func=run_spectra)
    p = sub.add_parser("pretrain")
    p.add_argument("--sources", nargs="+", default=["natural", "medical"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tag", default="", help="label stored with the runs (e.g. the code version)")
    p.add_argument("--json", default=None)
    p.set_defaults(func=run_pretrain)
    c = sub.add_parser("compare", help="the pretrain summary over several result files")
    c.add_argument("json", nargs="+")
    c.set_defaults(func=run_compare)
    t = sub.add_parser("timing")
    t.add_argument("--n", type=int, default=10000)
    t.set_defaults(func=run_timing)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
