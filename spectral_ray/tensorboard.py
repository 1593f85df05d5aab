"""Per-trial TensorBoard output beyond Ray's own scalars: PSD curves and a PSD-over-epochs heat
map as images, and the trial's hyper-parameters with its final metrics for the HParams view."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from spectral_ray.spectrum import frequency_axis, normalize_spectrum

# Final metrics shown in the HParams table (when present).
HPARAM_METRICS = ("iid_auc", "ood_auc", "val_auc", "iid_ood_gap", "centroid_pretrained", "centroid_finetuned",
                  "alignment_finetuned", "band_alignment_finetuned")


def _figure_to_array(fig) -> np.ndarray:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    buf.seek(0)
    from matplotlib.image import imread

    return (imread(buf)[..., :3] * 255).astype(np.uint8)


def psd_curves_image(spectra: dict[str, list[float]], title: str = "") -> np.ndarray:
    """Unit-max spectra vs normalised radial frequency, log y: an RGB array (H, W, 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, p in spectra.items():
        p = normalize_spectrum(np.asarray(p, float), "max")
        ax.plot(frequency_axis(len(p)), p, lw=1.5, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("ω̄ = k/K")
    ax.set_ylabel("PSD (unit max)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_to_array(fig)


def psd_heatmap_image(rows: list[np.ndarray], ylabel: str = "epoch") -> np.ndarray:
    """Unit-max spectra stacked as rows (e.g. one per epoch), log colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    m = normalize_spectrum(np.asarray(rows, float), "max")
    fig, ax = plt.subplots(figsize=(5, 2.8))
    im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", extent=(0, 1, 0.5, len(rows) + 0.5),
                   norm=LogNorm(vmin=max(m[m > 0].min(), 1e-4), vmax=1))
    ax.set_xlabel("ω̄ = k/K")
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label="PSD (unit max)")
    fig.tight_layout()
    return _figure_to_array(fig)


class TrialWriter:
    """Writes next to Ray's own event file (which holds the per-epoch scalars) in the trial folder."""

    def __init__(self, logdir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), filename_suffix=".spectral")

    def final(self, final: dict, epoch_psds: list[np.ndarray], hparams: dict) -> None:
        curves = {name: final[f"psd_{name}"] for name in ("pretrained", "before", "finetuned", "artifact")
                  if f"psd_{name}" in final}
        self.writer.add_image("psd/curves", psd_curves_image(curves, "learning priority vs artifact"),
                              dataformats="HWC")
        if epoch_psds:
            self.writer.add_image("psd/heatmap_over_epochs", psd_heatmap_image(epoch_psds), dataformats="HWC")
        metrics = {f"final/{k}": float(final[k]) for k in HPARAM_METRICS
                   if isinstance(final.get(k), (int, float)) and final.get(k) is not None}
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()
