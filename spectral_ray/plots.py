"""Every figure the library draws (Agg backend, no display): spectra against normalised
frequency, a spectra-over-epochs heat map, dataset preview grids and dataset spectra on log-log
axes. Callers pick the sink: a PNG file (:func:`save_png`) or an RGB array for TensorBoard
(:func:`figure_rgb`). ``analysis/figures.py`` draws the report's figures itself.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = ["pyplot", "save_png", "figure_rgb", "spectra_figure", "plot_spectra", "heatmap_figure",
           "preview_grid", "dataset_spectra_plot"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: str | Path, *, dpi: int | None = None) -> Path:
    """Write ``fig`` to ``out`` (parent folders created) and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out


def figure_rgb(fig, dpi: int = 100) -> np.ndarray:
    """``fig`` as an RGB uint8 array ``(H, W, 3)`` (for TensorBoard's ``add_image``); closes it."""
    from matplotlib.image import imread

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    buf.seek(0)
    return (imread(buf)[..., :3] * 255).astype(np.uint8)


# ------------------------------------------------------------------------------ spectra


def spectra_figure(spectra: dict[str, np.ndarray], *, title: str = "", normalize: str = "max", logy: bool = True,
                   markers: bool = False, figsize: tuple[float, float] = (5, 3.4), dpi: int = 100,
                   x: np.ndarray | None = None, xlabel: str = "normalised radial frequency ω̄ = k/K"):
    """Named radial spectra each scaled to unit ``normalize``
    (:func:`spectral_ray.spectrum.normalize_spectrum`), log y by default, against ``x``: by default
    ω̄ = k/K for K+1 bins; a measure on another axis passes its own
    (:func:`spectral_ray.spectrum.measure_axis`) and ``xlabel``."""
    from spectral_ray.spectrum import frequency_axis, normalize_spectrum

    fig, ax = pyplot().subplots(figsize=figsize, dpi=dpi)
    for name, p in spectra.items():
        p = normalize_spectrum(np.asarray(p, dtype=float), normalize)
        axis = frequency_axis(len(p)) if x is None else np.asarray(x, dtype=float)
        ax.plot(axis, p, lw=1.5, label=name, **({"marker": "o", "ms": 2.5} if markers else {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"PSD (unit {normalize})")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_spectra(spectra: dict[str, np.ndarray], out: str | Path, *, title: str = "", normalize: str = "max",
                 logy: bool = True, **axis) -> Path:
    """:func:`spectra_figure` (with markers) saved as a PNG at ``out``; ``axis``: its ``x``/``xlabel``."""
    return save_png(spectra_figure(spectra, title=title, normalize=normalize, logy=logy, markers=True, dpi=120,
                                   **axis), out)


def heatmap_figure(rows: list[np.ndarray], *, ylabel: str = "epoch", title: str = ""):
    """Unit-max spectra stacked as rows (e.g. one per epoch) over ω̄ ∈ [0, 1], log colour scale."""
    from matplotlib.colors import LogNorm

    from spectral_ray.spectrum import normalize_spectrum

    m = normalize_spectrum(np.asarray(rows, float), "max")
    fig, ax = pyplot().subplots(figsize=(5, 2.8))
    im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", extent=(0, 1, 0.5, len(rows) + 0.5),
                   norm=LogNorm(vmin=max(m[m > 0].min(), 1e-4), vmax=1))
    ax.set_xlabel("ω̄ = k/K")
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label="PSD (unit max)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def dataset_spectra_plot(datasets, out: str | Path, *, max_images: int = 2000, dpi: int = 80) -> dict[str, float]:
    """Write a log-log plot of each dataset's mean radial PSD (unit sum over k ≥ 1) with its
    fitted slope (:func:`spectral_ray.data.preview.dataset_spectrum`); returns {name: slope}."""
    from spectral_ray.data.preview import dataset_spectrum

    fig, ax = pyplot().subplots(figsize=(4.5, 3.4))
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
    save_png(fig, out, dpi=dpi)
    return slopes


# ------------------------------------------------------------------------------- images


def _show(ax, img: np.ndarray, title: str | None = None) -> None:
    """One ``(C, N, N)`` image in [0, 1] (grey or RGB), without ticks."""
    ax.axis("on")
    if img.shape[0] == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=6, pad=1)


def preview_grid(ds, out: str | Path, *, per_class: int = 8, artifact=None, degradation: float = 1.0, pairs: int = 4,
                 seed: int = 0, dpi: int = 60) -> Path:
    """Write a PNG: one row of ``per_class`` samples per class (at most 16 classes shown).

    With ``artifact`` (a callable ``artifact(images, rng)``), round(degradation × shown) of the
    *positive-class* (label 1) samples carry the artifact, as in the degradation protocol (marked
    "+art"), and ``pairs`` extra rows show clean | artifact | 10× |difference| triples.
    """
    rng = np.random.default_rng(seed)
    classes = list(range(min(len(ds.classes), 16)))
    picks = {c: np.sort(rng.permutation(np.where(ds.labels == c)[0])[:per_class]) for c in classes}
    n_rows = len(classes) + (pairs if artifact is not None else 0)
    n_cols = max(per_class, 3 * min(pairs, 1) if artifact is not None else per_class)
    fig, axes = pyplot().subplots(n_rows, n_cols, figsize=(1.1 * n_cols, 1.15 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, c in enumerate(classes):
        imgs, marked = _class_samples(ds.images[picks[c]], artifact if c == 1 else None, degradation, rng)
        for j, img in enumerate(imgs):
            _show(axes[r, j], img, "+art" if marked[j] else None)
        axes[r, 0].set_ylabel(ds.classes[c], fontsize=7, rotation=0, ha="right", va="center")
    if artifact is not None:
        _artifact_pairs(axes[len(classes):], ds, artifact, pairs, rng)
    name = ds.name or "dataset"
    fig.suptitle(f"{name}: {len(ds)} images, {ds.images.shape[-1]} px, {len(ds.classes)} classes", fontsize=8)
    fig.tight_layout(pad=0.3)
    return save_png(fig, out, dpi=dpi)


def _class_samples(imgs: np.ndarray, artifact, degradation: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """The samples of one class, round(degradation × n) of them with ``artifact`` (None: all clean)."""
    marked = np.zeros(len(imgs), bool)
    if artifact is None:
        return imgs, marked
    k = int(round(degradation * len(imgs)))
    marked[rng.permutation(len(imgs))[:k]] = True
    if k:
        imgs = imgs.copy()
        imgs[marked] = artifact(imgs[marked], rng)
    return imgs, marked


def _artifact_pairs(rows, ds, artifact, pairs: int, rng) -> None:
    """Rows of clean | artifact | 10× |difference| for ``pairs`` random images."""
    pool = rng.permutation(len(ds))[:pairs]
    clean = ds.images[pool]
    dirty = artifact(clean.copy(), rng)
    for i in range(len(pool)):
        diff = np.clip(10 * np.abs(dirty[i] - clean[i]), 0, 1)
        for j, (img, title) in enumerate(((clean[i], "clean"), (dirty[i], "artifact"), (diff, "10×|diff|"))):
            _show(rows[i, j], img, title)
