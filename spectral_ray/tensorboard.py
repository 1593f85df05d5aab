"""Per-trial TensorBoard output beyond Ray's own scalars: PSD curves and a PSD-over-epochs heat
map as images, and the trial's hyper-parameters with its final metrics for the HParams view."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectral_ray import plots

# Final metrics shown in the HParams table (when present).
HPARAM_METRICS = ("iid_auc", "ood_auc", "val_auc", "iid_ood_gap", "centroid_pretrained", "centroid_finetuned",
                  "alignment_finetuned", "band_alignment_finetuned")


class TrialWriter:
    """Writes next to Ray's own event file (which holds the per-epoch scalars) in the trial folder."""

    def __init__(self, logdir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), filename_suffix=".spectral")

    def final(self, final: dict, epoch_psds: list[np.ndarray], hparams: dict) -> None:
        curves = {name: final[f"psd_{name}"] for name in ("pretrained", "before", "finetuned", "artifact")
                  if f"psd_{name}" in final}
        curves_fig = plots.spectra_figure(curves, title="learning priority vs artifact", figsize=(5, 3.2))
        self.writer.add_image("psd/curves", plots.figure_rgb(curves_fig), dataformats="HWC")
        if epoch_psds:
            heatmap = plots.figure_rgb(plots.heatmap_figure(epoch_psds))
            self.writer.add_image("psd/heatmap_over_epochs", heatmap, dataformats="HWC")
        metrics = {f"final/{k}": float(final[k]) for k in HPARAM_METRICS
                   if isinstance(final.get(k), (int, float)) and final.get(k) is not None}
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()
