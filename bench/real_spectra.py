"""Embedded sources against real pixels at the same size: mean radial spectra and log-log slopes.

Run after ``bash scripts/real-mini-data.sh``::

    .venv/bin/python bench/real_spectra.py [--n 2000] [--seeds 0 1] [--plot docs/img/real-vs-embedded-spectra.png] [--json OUT]

Pairs (64 px, :func:`spectral_ray.data.preview.dataset_spectrum`, unit sum over k ≥ 1):

* photographs: embedded ``natural`` (skimage/sklearn crops) vs ``natural_real`` (tiles of the
  twelve mate-backgrounds photographs),
* CT: embedded ``medical`` with ``modality=ct`` vs ``medical_real`` (tiles of the real head CT in
  the lab's HU window); also the embedded head CT class alone,
* MRI: embedded ``medical`` with ``modality=mr`` vs the real T1 patches of ``mri_atlas``.

For each: the slope of the mean spectrum over k = 1…32, 1…8 and 16…32, and the *spread* of the
real data — the slopes of the per-class mean spectra (per photograph, per head level) and the
10–90 % range of per-image slopes — against which the embedded value is judged inside/outside.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BANDS = {"k1-32": (1, 32), "k1-8": (1, 8), "k16-32": (16, 32)}


def slopes(psd: np.ndarray) -> dict[str, float]:
    from spectral_ray.spectrum import spectral_slope

    return {b: spectral_slope(psd, lo, hi) for b, (lo, hi) in BANDS.items()}


def image_slopes(images: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Per-image log-log slope over k = lo…hi (images (n, C, H, W), channel mean)."""
    from spectral_ray.spectrum import radial_psd

    psd = radial_psd(images.mean(axis=1).astype(np.float64))
    k = np.arange(lo, hi + 1)
    logp = np.log(np.maximum(psd[:, lo: hi + 1], 1e-30))
    return np.polyfit(np.log(k), logp.T, 1)[0]


def describe(ds, by_class: bool = True) -> dict:
    """Mean-spectrum slopes, per-class slopes, per-image slope percentiles and the mean PSD."""
    from spectral_ray.data.preview import dataset_spectrum

    psd, _ = dataset_spectrum(ds, max_images=len(ds))
    out = {"n": len(ds), "psd": psd.tolist(), **slopes(psd)}
    for b, (lo, hi) in BANDS.items():
        out[f"image_p10_{b}"], out[f"image_p90_{b}"] = (float(v) for v in np.percentile(image_slopes(ds.images, lo, hi), [10, 90]))
    if by_class:
        cls, cls_psd = {}, {}
        for c in np.unique(ds.labels):
            p, _ = dataset_spectrum(ds.subset(ds.labels == c), max_images=int((ds.labels == c).sum()))
            cls[ds.classes[c]], cls_psd[ds.classes[c]] = slopes(p)["k1-32"], p.tolist()
        out["class_slopes"], out["class_psd"] = cls, cls_psd
    return out


def measure(n: int, seeds: list[int]) -> dict[str, dict]:
    from spectral_ray.data import get_dataset

    res: dict[str, dict] = {}
    emb = {"natural": {}, "medical/ct": {"modality": "ct"}, "medical/mr": {"modality": "mr"}}
    for label, extra in emb.items():
        runs = [describe(get_dataset(label.split("/")[0], n=n, seed=s, size=64, progress=False, **extra)) for s in seeds]
        res[label] = {k: (float(np.mean([r[k] for r in runs])) if isinstance(runs[0][k], float) else runs[0][k])
                      for k in runs[0]}
        res[label]["psd"] = np.mean([r["psd"] for r in runs], 0).tolist()
        res[label]["seed_range_k1-32"] = float(np.ptp([r["k1-32"] for r in runs]))
        if label == "medical/ct":
            res["medical/ct_head"] = {"k1-32": float(np.mean([r["class_slopes"]["ct_head"] for r in runs]))}
    res["natural_real"] = describe(get_dataset("natural_real", size=64))
    res["medical_real"] = describe(get_dataset("medical_real", size=64))
    res["mri_atlas (T1)"] = describe(get_dataset("mri_atlas", size=64), by_class=False)
    return res


PAIRS = (("photographs", "natural", "natural_real"), ("CT", "medical/ct", "medical_real"), ("MRI", "medical/mr", "mri_atlas (T1)"))


def report(res: dict[str, dict]) -> None:
    print(f"{'':<18}{'n':>6}" + "".join(f"{b:>22}" for b in BANDS) + f"{'class slopes k1-32':>22}")
    print(f"{'':<24}" + "  mean-spectrum slope (per-image 10…90 %)" )
    for label, r in res.items():
        if "psd" not in r:
            print(f"{label:<18}{'':>6}{r['k1-32']:>8.2f}")
            continue
        cls = r.get("class_slopes")
        cells = "".join(f"{r[b]:>8.2f} ({r[f'image_p10_{b}']:.2f}…{r[f'image_p90_{b}']:.2f})" for b in BANDS)
        spread = f"{min(cls.values()):>.2f}…{max(cls.values()):.2f}" if cls else ""
        print(f"{label:<18}{r['n']:>6}{cells}{spread:>16}")
    print("# embedded mean-spectrum slope against the real images' per-image 10-90 % range")
    for what, e, real in PAIRS:
        for b in BANDS:
            r, v = res[real], res[e][b]
            lo, hi = r[f"image_p10_{b}"], r[f"image_p90_{b}"]
            where = "inside" if lo <= v <= hi else "OUTSIDE"
            print(f"{what:<12} {b:<7} embedded {v:.2f} vs real {r[b]:.2f}: {where} [{lo:.2f}, {hi:.2f}]")


def plot(res: dict[str, dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def unit(q):
        q = np.asarray(q)[1:]
        return q / q.sum()

    k = np.arange(1, 33)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (what, e, real) in zip(axes, PAIRS):
        pe, pr = unit(res[e]["psd"]), unit(res[real]["psd"])
        ax.loglog(k, pe, "C3-", label=f"embedded {e} ({res[e]['k1-32']:.2f})")
        ax.loglog(k, pr, "k-", label=f"real {real} ({res[real]['k1-32']:.2f})")
        for j, q in enumerate((res[real].get("class_psd") or {}).values()):  # the real classes (photographs, head levels)
            ax.loglog(k, unit(q), "-", color="0.6", lw=0.6, label="real, per class" if j == 0 else None)
        ax.set_title(what, fontsize=10)
        axes[3].semilogx(k, pe / pr, label=f"{what}: embedded / real")
    for ax in axes[:3]:
        ax.set_xlabel("radial frequency k (cycles / image)")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean power (unit sum, k ≥ 1)")
    axes[3].axhline(1.0, color="k", lw=0.8)
    axes[3].set_yscale("log")
    axes[3].set_xlabel("radial frequency k (cycles / image)")
    axes[3].set_title("embedded over real", fontsize=10)
    axes[3].grid(True, which="both", lw=0.3)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images per embedded source and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--plot", help="PNG of the spectra")
    ap.add_argument("--json", help="write the numbers (and mean spectra) here")
    args = ap.parse_args()
    res = measure(args.n, args.seeds)
    report(res)
    if args.plot:
        plot(res, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
