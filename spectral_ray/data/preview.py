"""Look at the data: preview grids per class (with clean-vs-artifact pairs) and dataset spectra."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectral_ray.data.registry import ImageDataset
from spectral_ray.spectrum import radial_psd, spectral_slope

__all__ = ["dataset_spectrum", "preview_grid", "spectrum_plot"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax, img: np.ndarray) -> None:
    if img.shape[0] == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def dataset_spectrum(ds: ImageDataset, max_images: int = 2000, seed: int = 0) -> tuple[np.ndarray, float]:
    """Mean radial PSD (channel-mean images, up to ``max_images``) and its log-log slope over
    bins k = 1 … N/2 (:func:`spectral_ray.spectrum.spectral_slope`)."""
    idx = np.arange(len(ds))
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    gray = ds.images[idx].mean(axis=1).astype(np.float64)
    psd = radial_psd(gray).mean(0)
    return psd, spectral_slope(psd)


def preview_grid(
    ds: ImageDataset,
    out: str | Path,
    *,
    per_class: int = 8,
    artifact=None,
    degradation: float = 1.0,
    pairs: int = 4,
    seed: int = 0,
    dpi: int = 60,
) -> Path:
    """Write a PNG: one row of ``per_class`` samples per class (at most 16 classes shown).

    With ``artifact`` (a callable ``artifact(images, rng)``), round(degradation × shown) of the
    *positive-class* (label 1) samples carry the artifact, as in the degradation protocol (marked
    "+art"), and ``pairs`` extra rows show clean | artifact | 10× |difference| triples.
    """
    plt = _plt()
    rng = np.random.default_rng(seed)
    classes = list(range(min(len(ds.classes), 16)))
    picks = {c: np.sort(rng.permutation(np.where(ds.labels == c)[0])[:per_class]) for c in classes}
    n_rows = len(classes) + (pairs if artifact is not None else 0)
    n_cols = max(per_class, 3 * min(pairs, 1) if artifact is not None else per_class)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.1 * n_cols, 1.15 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, c in enumerate(classes):
        imgs = ds.images[picks[c]]
        marked = np.zeros(len(imgs), bool)
        if artifact is not None and c == 1:
            k = int(round(degradation * len(imgs)))
            marked[rng.permutation(len(imgs))[:k]] = True
            if k:
                imgs = imgs.copy()
                imgs[marked] = artifact(imgs[marked], rng)
        for j, img in enumerate(imgs):
            ax = axes[r, j]
            ax.axis("on")
            _show(ax, img)
            if marked[j]:
                ax.set_title("+art", fontsize=6, pad=1)
        axes[r, 0].set_ylabel(ds.classes[c], fontsize=7, rotation=0, ha="right", va="center")
    if artifact is not None:
        pool = rng.permutation(len(ds))[:pairs]
        clean = ds.images[pool]
        dirty = artifact(clean.copy(), rng)
        for i in range(len(pool)):
            r = len(classes) + i
            for j, (img, title) in enumerate(((clean[i], "clean"), (dirty[i], "artifact"), (np.clip(10 * np.abs(dirty[i] - clean[i]), 0, 1), "10×|diff|"))):
                axes[r, j].axis("on")
                _show(axes[r, j], img)
                axes[r, j].set_title(title, fontsize=6, pad=1)
    name = ds.name or "dataset"
    fig.suptitle(f"{name}: {len(ds)} images, {ds.images.shape[-1]} px, {len(ds.classes)} classes", fontsize=8)
    fig.tight_layout(pad=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def spectrum_plot(datasets: list[ImageDataset], out: str | Path, *, max_images: int = 2000, dpi: int = 80) -> dict[str, float]:
    """Write a log-log plot of each dataset's mean radial PSD (unit sum over k ≥ 1) with its
    fitted slope; returns {name: slope}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    slopes = {}
    for ds in datasets:
        psd, slope = dataset_spectrum(ds, max_images)
        k = np.arange(1, len(psd))
        p = psd[1:] / psd[1:].sum()
        line = ax.loglog(k, p, label=f"{ds.name}: slope {slope:.2f}")[0]
        fit = np.polyfit(np.log(k), np.log(p), 1)
        ax.loglog(k, np.exp(np.polyval(fit, np.log(k))), "--", color=line.get_color(), lw=0.8)
        slopes[ds.name] = slope
    ax.set_xlabel("radial frequency k (cycles / image)")
    ax.set_ylabel("mean power (unit sum, k ≥ 1)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return slopes
