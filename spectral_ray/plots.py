"""Small matplotlib helpers shared by the command line and the analysis (Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_spectra(spectra: dict[str, np.ndarray], out: Path, *, title: str = "", normalize: str = "max",
                 logy: bool = True) -> Path:
    """Plot named spectra against normalised radial frequency ω̄ = k/K and save to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spectral_ray.spectrum import frequency_axis, normalize_spectrum

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for name, p in spectra.items():
        p = normalize_spectrum(np.asarray(p, dtype=float), normalize)
        ax.plot(frequency_axis(len(p)), p, marker="o", ms=2.5, lw=1.4, label=name)
    ax.set_xlabel("normalised radial frequency ω̄ = k/K")
    ax.set_ylabel(f"PSD (unit {normalize})")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
