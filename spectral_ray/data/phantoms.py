"""Phantom drawing and simulated CT / MR acquisition for the embedded medical datasets.

Phantoms are *tissue label maps* drawn on a supersampled grid (``ss`` × the output size) in
normalised coordinates x, y ∈ [−1, 1] (x to the right, y downwards). A label map becomes an image
through a modality:

* **CT** (:func:`ct_acquire`): tissue → Hounsfield units → linear attenuation per pixel (water
  0.019 /mm, the field of view in mm sets the pixel size) → ``skimage.transform.radon`` (line
  integrals) → Poisson photon counts at dose N₀ (plus the attenuation of the rest of the body,
  for patches) → −log → filtered back-projection (``iradon``, a ramp … Hann kernel) → HU → a
  display window → [0, 1]. The dose is N₀ photons per ray, or (opt-in) the one automatic
  exposure control picks for a requested noise level in HU (:func:`aec_photons`).
* **MR** (:func:`mr_signal` + :func:`mr_acquire`): tissue (PD, T1, T2) → spin-echo signal
  PD·(1 − e^(−TR/T1))·e^(−TE/T2) for a random weighting (T1w / T2w / PD) → smooth coil bias
  field → 2-D FFT (k-space) of the supersampled object → central size×size k-space kept
  (truncation, Gibbs ringing), phase-encode lines truncated further and optionally
  undersampled → complex Gaussian noise → inverse FFT → magnitude (Rician noise) → [0, 1].
  Opt-in: a reconstruction window over the acquired matrix (:func:`k_window`: Fermi, Hamming)
  and the noise set by a tissue SNR.

The opt-in parts serve the ``medical`` source; the targets (``ct_lesion``, ``mri_knee``) call
without them and keep their arrays bit for bit (tests/test_medical_source.py).

All randomness comes from the ``rng`` passed in, so a generator seeded per image is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from skimage.transform import iradon, radon

# ----------------------------------------------------------------------------- tissues

# name: (HU, HU jitter sd, PD, T1 ms, T2 ms) — rough 1.5 T values; jittered per image.
TISSUES: dict[str, tuple[float, float, float, float, float]] = {
    "air": (-1000, 0, 0.0, 1000, 1),
    "lung": (-840, 40, 0.12, 1200, 40),
    "fat": (-100, 15, 0.90, 260, 85),
    "muscle": (45, 8, 0.75, 870, 47),
    "liver": (60, 10, 0.80, 490, 43),
    "spleen": (50, 8, 0.85, 780, 62),
    "kidney": (35, 15, 0.85, 650, 58),
    "fluid": (5, 5, 1.00, 3000, 1500),
    "blood": (45, 60, 0.40, 1200, 150),  # CT: with or without contrast; MR: partial flow void
    "bone": (900, 200, 0.05, 300, 2),
    "marrow": (250, 60, 0.85, 320, 80),
    "grey": (40, 4, 0.80, 950, 100),
    "white": (28, 4, 0.70, 600, 80),
    "csf": (5, 4, 1.00, 3500, 2000),
    "bowel": (20, 30, 0.70, 800, 60),
    "lesion": (35, 25, 0.85, 1000, 110),
    "ligament": (80, 10, 0.25, 500, 15),
    "cartilage": (70, 10, 0.80, 1000, 40),
    "edema": (15, 8, 0.95, 1800, 300),
}
TISSUE_NAMES = list(TISSUES)
T = {name: i for i, name in enumerate(TISSUE_NAMES)}  # tissue name -> label
MU_WATER_PER_MM = 0.019


@dataclass
class Canvas:
    """A supersampled label map with its (possibly posed) coordinate grids."""

    labels: np.ndarray  # (R, R) int8 tissue labels
    x: np.ndarray  # (R, R) normalised coordinates after the pose transform
    y: np.ndarray

    def paint(self, mask: np.ndarray, tissue: str) -> None:
        self.labels[mask] = T[tissue]


@lru_cache(maxsize=8)
def _base_grid(r: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(r) + 0.5) / r * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def canvas(r: int, *, angle: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0), flip: bool = False) -> Canvas:
    """An empty (air) canvas of r×r pixels whose coordinates are rotated by ``angle`` (radians),
    scaled (objects appear ``scale`` times larger), shifted and optionally mirrored left/right."""
    x0, y0 = _base_grid(r)
    x0, y0 = x0 - shift[0], y0 - shift[1]
    ca, sa = np.cos(angle), np.sin(angle)
    x = (ca * x0 + sa * y0) / scale
    y = (-sa * x0 + ca * y0) / scale
    if flip:
        x = -x
    return Canvas(np.zeros((r, r), np.int8), x, y)


def ellipse(cv: Canvas, cx, cy, a, b, theta=0.0) -> np.ndarray:
    """Mask of the ellipse centred (cx, cy) with half-axes a (along x rotated by theta) and b."""
    dx, dy = cv.x - cx, cv.y - cy
    ct, st = np.cos(theta), np.sin(theta)
    u = ct * dx + st * dy
    v = -st * dx + ct * dy
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def segment_coords(cv: Canvas, p0, p1):
    """(t, d): position along the segment p0→p1 in [0, 1] (unclipped) and signed distance from
    its line, in normalised units, for every pixel."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.hypot(*d))
    ux, uy = d / length
    dx, dy = cv.x - p0[0], cv.y - p0[1]
    t = (dx * ux + dy * uy) / length
    dist = -dx * uy + dy * ux
    return t, dist


def polar(cv: Canvas, cx, cy):
    dx, dy = cv.x - cx, cv.y - cy
    return np.hypot(dx, dy), np.arctan2(dy, dx)


# ----------------------------------------------------------------------------- texture


def smooth_field(shape, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (sigma in pixels)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return f / (f.std() + 1e-12)


def downsample(img: np.ndarray, ss: int) -> np.ndarray:
    """Block mean over ss×ss pixels (the supersampled canvas → the output grid)."""
    if ss == 1:
        return img
    r = img.shape[-1]
    return img.reshape(*img.shape[:-2], r // ss, ss, r // ss, ss).mean(axis=(-3, -1))


# ----------------------------------------------------------------------------- CT


def hu_map(labels: np.ndarray, rng: np.random.Generator, *, texture: float = 8.0, contrast_blood: float | None = None) -> np.ndarray:
    """Label map → HU image with per-image tissue jitter and smooth soft-tissue texture."""
    lut = np.array([TISSUES[n][0] + TISSUES[n][1] * rng.standard_normal() for n in TISSUE_NAMES])
    lut[T["air"]] = -1000.0
    if contrast_blood is not None:
        lut[T["blood"]] = contrast_blood
    hu = lut[labels]
    if texture:
        soft = labels != T["air"]
        hu = hu + texture * smooth_field(labels.shape, rng, 1.5 * labels.shape[-1] / 64) * soft
    return hu


FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")  # sharp → smooth (skimage names)


@lru_cache(maxsize=64)
def fbp_noise_gain(n: int, n_angles: int, filter_name: str, circle: bool = True) -> float:
    """Variance of a central FBP pixel (``iradon``, n×n) per unit variance of white noise in
    every sinogram sample: the factor that turns projection noise into pixel noise. Estimated
    once per geometry from 16 noise-only sinograms with a fixed generator (it draws nothing from
    the caller's), over the central disc of radius n/4."""
    if filter_name not in FBP_FILTERS:
        raise ValueError(f"unknown FBP filter {filter_name!r}; allowed: {', '.join(FBP_FILTERS)}")
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    shape = radon(np.zeros((n, n)), theta, circle=circle).shape
    g = np.random.default_rng(20240601)
    yy, xx = np.mgrid[:n, :n]
    centre = (yy - n // 2) ** 2 + (xx - n // 2) ** 2 <= (n // 4) ** 2
    recs = [iradon(g.standard_normal(shape), theta, output_size=n, filter_name=filter_name, circle=circle)[centre] for _ in range(16)]
    return float(np.var(np.stack(recs)))


def aec_photons(sino: np.ndarray, noise_hu: float, px_mm: float, n: int, n_angles: int, filter_name: str, circle: bool = True) -> float:
    """Unattenuated photons per ray N₀ that give a central-pixel noise of ``noise_hu`` (HU sd).

    What automatic exposure control does (GE's noise index, Siemens' CARE Dose): the tube current
    follows the patient's attenuation so that the image noise stays near a chosen level. The
    −log of Poisson counts has variance e^p / N₀ for a ray of line integral p, so the central
    pixel's variance is ``fbp_noise_gain`` × mean over the rays through the centre of e^p / N₀.
    ``sino``: noise-free line integrals (detector × angle) in the units ``ct_acquire`` uses, of
    an n×n image with pixels of ``px_mm``.
    """
    centre_rays = np.exp(sino[sino.shape[0] // 2, :]).mean()
    sigma_mu = noise_hu / 1000.0 * MU_WATER_PER_MM * px_mm
    return float(fbp_noise_gain(n, n_angles, filter_name, circle) * centre_rays / sigma_mu**2)


def ct_acquire(
    hu: np.ndarray,
    rng: np.random.Generator,
    *,
    n0: float | None = None,
    fov_mm: float,
    window: tuple[float, float],
    n_angles: int = 64,
    extra_attenuation: float = 0.0,
    circle: bool = True,
    filter_name: str = "ramp",
    noise_hu: float | None = None,
    aec_filter: str = "shepp-logan",
) -> np.ndarray:
    """Simulated CT of an HU image (size×size): radon → Poisson(N₀·e^(−p)) → −log → FBP → window.

    The dose is either ``n0`` (unattenuated photons per ray) or, with ``noise_hu``, set by
    automatic exposure control (:func:`aec_photons`): N₀ such that the central pixel's noise
    would be ``noise_hu`` HU with the reference kernel ``aec_filter``; the image is then
    reconstructed with ``filter_name``, so a sharper kernel shows more noise at the same dose,
    as on a scanner. Give exactly one of the two.
    ``extra_attenuation`` adds a constant line integral to every ray (the body outside a patch),
    which lowers the counts and raises the noise like a thicker patient would. ``filter_name`` is
    the FBP filter (skimage: ramp, shepp-logan, cosine, hamming, hann), i.e. the reconstruction
    kernel from sharp (ramp) to smooth (hann).
    Returns the windowed image in [0, 1] (float64).
    """
    if (n0 is None) == (noise_hu is None):
        raise ValueError("ct_acquire needs exactly one of n0 (photons per ray) or noise_hu (AEC noise level)")
    n = hu.shape[-1]
    px_mm = fov_mm / n
    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None) * px_mm
    if circle:  # zero outside the reconstruction circle, with skimage's own criterion
        yy, xx = np.mgrid[:n, :n]
        mu = mu * (((yy - n // 2) ** 2 + (xx - n // 2) ** 2) <= (n // 2) ** 2)
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    sino = radon(mu, theta, circle=circle)
    if noise_hu is not None:
        n0 = aec_photons(sino + extra_attenuation, noise_hu, px_mm, n, n_angles, aec_filter, circle)
    counts = rng.poisson(n0 * np.exp(-(sino + extra_attenuation)))
    sino_noisy = -np.log(np.maximum(counts, 1) / n0) - extra_attenuation
    mu_rec = iradon(sino_noisy, theta, output_size=n, filter_name=filter_name, circle=circle)
    hu_rec = (mu_rec / px_mm / MU_WATER_PER_MM - 1.0) * 1000.0
    level, width = window
    return np.clip((hu_rec - (level - width / 2)) / width, 0.0, 1.0)


# ----------------------------------------------------------------------------- MR

MR_WEIGHTINGS = {  # name: (TR range ms, TE range ms)
    "T1": ((400.0, 700.0), (8.0, 20.0)),
    "T2": ((2500.0, 4500.0), (80.0, 120.0)),
    "PD": ((2000.0, 3500.0), (10.0, 30.0)),
}


def mr_signal(
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    weighting: str | None = None,
    texture: float = 0.05,
    fat_sat: bool = False,
    layers=None,
) -> np.ndarray:
    """Label map → spin-echo signal for a random (or given) weighting, with tissue jitter,
    smooth texture and a smooth multiplicative coil bias field.

    ``layers``: optional ``[(alpha, tissue), ...]`` of soft (partial-volume) structures, alpha an
    array in [0, 1] like ``labels``; each is composited in order over the label map's signal,
    s ← (1 − α)·s + α·signal(tissue), before texture and bias. Layers draw nothing from ``rng``.
    """
    weighting = weighting or rng.choice(list(MR_WEIGHTINGS))
    (tr_lo, tr_hi), (te_lo, te_hi) = MR_WEIGHTINGS[weighting]
    tr, te = rng.uniform(tr_lo, tr_hi), rng.uniform(te_lo, te_hi)
    lut = np.zeros(len(TISSUE_NAMES))
    for i, name in enumerate(TISSUE_NAMES):
        _, _, pd, t1, t2 = TISSUES[name]
        pd *= 1 + 0.08 * rng.standard_normal()
        t1 *= np.exp(0.12 * rng.standard_normal())
        t2 *= np.exp(0.12 * rng.standard_normal())
        lut[i] = max(pd, 0.0) * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)
    lut[T["air"]] = 0.0
    if fat_sat:
        lut[T["fat"]] *= 0.2
        lut[T["marrow"]] *= 0.3
    s = lut[labels]
    for alpha, tissue in layers or ():
        s = s + alpha * (lut[T[tissue]] - s)
    r = labels.shape[-1]
    body = labels != T["air"]
    if texture:
        s = s * (1 + texture * smooth_field(labels.shape, rng, 1.5 * r / 64) * body)
    # coil bias: smooth low-order field, 0.75 … 1.25
    x, y = _base_grid(r)
    c = rng.normal(0, 0.12, 5)
    bias = 1 + c[0] * x + c[1] * y + c[2] * x * y + c[3] * (x**2 - 0.33) + c[4] * (y**2 - 0.33)
    return np.clip(s * bias, 0.0, None)


MR_APODIZATIONS = ("none", "fermi", "hamming")


def k_window(name: str, rho: np.ndarray, radius: float = 0.9, width: float = 0.05) -> np.ndarray:
    """Reconstruction (apodisation) window over k-space at normalised radius ρ (1 = the edge of
    the acquired matrix): ``none`` (1), ``fermi`` 1/(1 + e^((ρ − radius)/width)) — flat, rolling
    off the outermost k-space — or ``hamming`` 0.54 + 0.46·cos(πρ), zero beyond ρ = 1."""
    if name == "none":
        return np.ones_like(rho)
    if name == "fermi":
        return 1.0 / (1.0 + np.exp((rho - radius) / width))
    if name == "hamming":
        return np.where(rho <= 1.0, 0.54 + 0.46 * np.cos(np.pi * np.minimum(rho, 1.0)), 0.0)
    raise ValueError(f"unknown k-space window {name!r}; allowed: {', '.join(MR_APODIZATIONS)}")


def mr_acquire(signals: np.ndarray, size: int, rngs, *, keep=None, undersample=None, noise=None, keep_read=None,
               apodize=None, snr=None) -> np.ndarray:
    """Batched MR acquisition of supersampled signal images ``(B, R, R)`` → ``(B, size, size)``.

    For image i: central size×size k-space of its R×R object (truncation), phase-encode rows
    beyond ``keep[i]`` × size/2 zeroed (more Gibbs ringing, blurring along y), frequency-encode
    columns beyond ``keep_read[i]`` × size/2 zeroed (a coarser acquisition matrix zero-filled to
    ``size``; default 1 = none), outer rows dropped
    at random with probability ``undersample[i]`` (incoherent aliasing), complex Gaussian noise
    of standard deviation ``noise[i]`` × the image's mean signal on the sampled lines, inverse FFT,
    magnitude, normalised by its 99.5th percentile. ``rngs`` gives one generator per image; keep,
    undersample and noise default to per-image random draws from them.

    Opt-in (None = off, as the targets use it): ``apodize[i]`` = ``(name, radius, width)``, a
    :func:`k_window` over the acquired matrix applied after the noise (the scanner's
    reconstruction filter); ``snr[i]`` sets the noise instead of ``noise``: the image-domain
    noise sd (per real channel, before the magnitude) is the mean signal of the object's
    non-zero pixels / ``snr[i]``, whatever the matrix and window (the NEMA-style tissue SNR).
    """
    b, r, _ = signals.shape
    if r % size:
        raise ValueError(f"supersampled size {r} must be a multiple of {size}")
    keep = np.array([g.uniform(0.55, 1.0) for g in rngs]) if keep is None else np.broadcast_to(keep, (b,))
    undersample = np.array([g.uniform(0.0, 0.35) if g.random() < 0.3 else 0.0 for g in rngs]) if undersample is None else np.broadcast_to(undersample, (b,))
    if snr is None:
        noise = np.array([g.uniform(0.015, 0.06) for g in rngs]) if noise is None else np.broadcast_to(noise, (b,))
    k = torch.fft.fftshift(torch.fft.fft2(torch.from_numpy(signals.astype(np.float32)), norm="ortho"), dim=(-2, -1))
    lo = r // 2 - size // 2
    k = k[:, lo : lo + size, lo : lo + size] * (size / r)
    ky = np.abs(np.arange(size) - size // 2)  # phase-encode (row) frequency
    masks = np.zeros((b, size, 1), np.float32)
    cols = np.ones((b, 1, size), np.float32)
    keep_read = None if keep_read is None else np.broadcast_to(keep_read, (b,))
    windows = None if apodize is None else np.zeros((b, size, size), np.float32)
    noise_c = np.zeros((b, size, size), np.complex64)
    for i, g in enumerate(rngs):
        m = ky <= keep[i] * size / 2
        if undersample[i] > 0:
            outer = ky > size // 16
            m = m & ~(outer & (g.random(size) < undersample[i]))
        masks[i, :, 0] = m
        if keep_read is not None:
            cols[i, 0] = ky <= keep_read[i] * size / 2  # the same |k| grid along the read direction
        if windows is not None:
            name, radius, width = apodize[i]
            read = 1.0 if keep_read is None else keep_read[i]
            rho = np.hypot(ky[:, None] / (keep[i] * size / 2), ky[None, :] / (read * size / 2))
            windows[i] = k_window(name, rho, radius, width)
        if snr is None:
            sigma = noise[i] * float(signals[i].mean())  # ortho FFT: k-space σ = image-domain σ
        else:  # per channel, image-domain σ² = σ_k² · Σ(sampled · window²) / size² (ortho inverse FFT)
            gain = (masks[i] * cols[i] * (1.0 if windows is None else windows[i]) ** 2).sum() / size**2
            body = signals[i][signals[i] > 0]
            sigma = np.sqrt(2) * float(body.mean() if body.size else 0.0) / snr[i] / np.sqrt(max(gain, 1e-12))
        noise_c[i] = (g.standard_normal((size, size)) + 1j * g.standard_normal((size, size))) * sigma / np.sqrt(2)
    k = (k + torch.from_numpy(noise_c)) * torch.from_numpy(masks)
    if keep_read is not None:
        k = k * torch.from_numpy(cols)
    if windows is not None:
        k = k * torch.from_numpy(windows)
    img = torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho").abs().numpy()
    scale = np.percentile(img.reshape(b, -1), 99.5, axis=1)
    scale = scale * np.array([g.uniform(0.9, 1.2) for g in rngs])
    return np.clip(img / np.maximum(scale, 1e-8)[:, None, None], 0.0, 1.0)
