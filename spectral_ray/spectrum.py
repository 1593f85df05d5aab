"""Radial power spectra and the learning priority of a model (docs/SCIENCE.md, the paper's Eq. 1).

Conventions used throughout the project:

* An image or gradient map is a real array ``(..., N, N)`` with N even.
* Its spectrum is binned into rings k = 0 … K, K = N/2 (Nyquist). Ring k holds the frequencies
  (u, v) (in cycles per image, centred spectrum) with k − ½ ≤ √(u² + v²) < k + ½. Corners beyond
  the Nyquist ring are left out. A radial PSD is the *mean* power over each ring, shape
  ``(..., K + 1)``.
* The normalised radial frequency of bin k is ω̄_k = k / K ∈ [0, 1] (``frequency_axis``).
* A learning priority is measured three ways (``learning_priority(measure=…)``, ``MEASURES``):
  ``power`` (this project's, used by every trial, figure and finding), ``freqbias`` (an exact
  port of Lin et al.'s zhiyugege/FreqBias ``grad.py``) and ``lin2022_centred`` (the same idea on
  this module's centred rings). ``measure_axis(measure, N)`` gives each one's x-axis.
* A unit-sum spectrum is a distribution over frequency (centroid, band mass, entropy,
  alignment); a unit-max spectrum is what the paper plots.
* The shortcut alignment (docs/SCIENCE.md, "Alignment") weighs a priority by the artifact's share
  of the power in each ring of the images it is planted into (``artifact_weight``,
  ``shortcut_alignment``); ``artifact_sensitivity`` is its model-native check, the first-order
  loss change along the artifact itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Literal

import numpy as np
import torch

Normalize = Literal[None, "sum", "max"]
Measure = Literal["power", "freqbias", "lin2022_centred"]
MEASURES = ("power", "freqbias", "lin2022_centred")

__all__ = [
    "radial_psd",
    "learning_priority",
    "MEASURES",
    "check_measure",
    "measure_axis",
    "freqbias_profile",
    "lin2022_centred_profile",
    "normalize_spectrum",
    "frequency_axis",
    "summarize",
    "value_at",
    "band_mass",
    "alignment",
    "artifact_weight",
    "shortcut_alignment",
    "directional_derivatives",
    "artifact_sensitivity",
    "cosine",
    "spectral_slope",
]


# ----------------------------------------------------------------------------- ring binning


@lru_cache(maxsize=32)
def _rings(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ring index, per-coefficient weight and ring counts for a real FFT of an n×n image.

    ``torch.fft.rfft2`` keeps the half plane v ≥ 0; every column but v = 0 and v = n/2 stands for
    itself and its mirror (−u, −v), which has the same power for a real input, so it counts twice.
    Weighted ring means over the half plane therefore equal ring means over the full centred
    spectrum, at half the FFT cost. Coefficients beyond Nyquist go to a discard bin K + 1.
    """
    if n % 2:
        raise ValueError(f"image size must be even, got N={n}")
    k_max = n // 2
    u = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)  # -n/2 … n/2-1 cycles per image
    v = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)  # 0 … n/2
    radius = torch.sqrt(u[:, None] ** 2 + v[None, :] ** 2)
    ring = torch.floor(radius + 0.5).long()
    ring[ring > k_max] = k_max + 1
    weight = torch.full((n, k_max + 1), 2.0, dtype=torch.float64)
    weight[:, 0] = 1.0
    weight[:, -1] = 1.0
    counts = torch.zeros(k_max + 2, dtype=torch.float64).index_add_(0, ring.flatten(), weight.flatten())
    return (
        ring.flatten().to(device),
        weight.flatten().to(device=device, dtype=torch.float32),
        counts[: k_max + 1].to(device=device, dtype=torch.float32),
    )


def ring_counts(n: int) -> np.ndarray:
    """Number of full-plane frequencies in each ring k = 0 … n/2 (float64, for Parseval checks)."""
    return _rings(n, "cpu")[2].double().numpy()


def normalize_spectrum(p, normalize: Normalize):
    """Scale a spectrum (last axis = frequency) to unit sum or unit maximum; None leaves it."""
    if normalize is None:
        return p
    tensor = isinstance(p, torch.Tensor)
    if normalize == "sum":
        return p / (p.sum(-1, keepdim=True) if tensor else p.sum(-1, keepdims=True))
    if normalize == "max":
        return p / (p.amax(-1, keepdim=True) if tensor else p.max(-1, keepdims=True))
    raise ValueError(f"normalize must be one of None, 'sum', 'max'; got {normalize!r}")


def radial_psd(x, normalize: Normalize = None, *, magnitude: bool = False):
    """Ring-averaged power spectrum of real images.

    Args:
        x: real tensor or numpy array ``(..., N, N)``, N even. Computed in float32 at least
            (float64 input stays float64).
        normalize: None, ``"sum"`` (unit sum per spectrum) or ``"max"`` (unit maximum).
        magnitude: average |FFT| instead of |FFT|² (the prior art's amplitude spectrum).

    Returns:
        ``(..., N//2 + 1)`` mean power |FFT2(x)|² over each ring k = 0 … N/2, same type (tensor or
        numpy) as the input. Unnormalised values are in (sum of pixel values)² units: bin 0 is
        (Σ x)², as ``torch.fft`` applies no scaling on the forward transform.
    """
    as_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(x) if as_numpy else x
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"expected (..., N, N) images, got shape {tuple(t.shape)}")
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    n = t.shape[-1]
    ring, weight, counts = _rings(n, str(t.device))
    spec = torch.fft.rfft2(t)
    power = spec.abs() if magnitude else spec.real.square() + spec.imag.square()
    power = power.flatten(-2) * weight.to(power.dtype)
    lead = power.shape[:-1]
    sums = torch.zeros(*lead, n // 2 + 2, dtype=power.dtype, device=power.device)
    sums.index_add_(-1, ring, power)
    psd = normalize_spectrum(sums[..., :-1] / counts.to(power.dtype), normalize)
    return psd.numpy() if as_numpy else psd


# ------------------------------------------------------------------------- learning priority


def _input_gradients_full(model, x, y, loss_fn) -> torch.Tensor:
    """∂ℓ/∂x per image, ``(B, C, N, N)`` fp32 (even under bf16): the one input-gradient code path
    of the learning priority and the artifact sensitivity."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    # Sum (not mean) over the batch: each image's gradient is then independent of batch size.
    loss = loss_fn(out.float(), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.float()


def _cross_entropy_sum(logits, y):
    return torch.nn.functional.cross_entropy(logits, y, reduction="sum")


def _default_batch(device: torch.device, x_all: torch.Tensor) -> int:
    return 64 if device.type != "cpu" else max(1, min(64, CPU_PRIORITY_PIXELS // (x_all.shape[-2] * x_all.shape[-1])))


def _gradient_batches(model, images, labels, batch_size, loss_fn, autocast_dtype, *extra):
    """Yield ``(start, x, y, g, *extra_batches)`` per batch: fp32 input gradients ``g`` (B, C, N, N)
    of ``loss_fn`` with ``model`` in eval mode under deterministic kernels (its mode restored at
    the end); ``extra`` arrays (n, …) are sliced and moved alongside."""
    from spectral_ray.training import deterministic_kernels, plain_strides  # the kernels fit uses

    device = next(model.parameters()).device
    x_all = plain_strides(torch.as_tensor(images))
    y_all = torch.as_tensor(labels).long()
    if x_all.ndim != 4 or x_all.shape[0] != y_all.shape[0]:
        raise ValueError(f"images must be (n, C, N, N) with one label each; got {tuple(x_all.shape)}, {tuple(y_all.shape)}")
    batch_size = batch_size or _default_batch(device, x_all)
    extra = [torch.as_tensor(e) for e in extra]
    was_training = model.training
    model.eval()
    with deterministic_kernels(device):
        try:
            for start in range(0, x_all.shape[0], batch_size):
                x = x_all[start : start + batch_size].to(device, torch.float32)
                y = y_all[start : start + batch_size].to(device)
                if autocast_dtype is not None:
                    with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                        g = _input_gradients_full(model, x, y, loss_fn)
                else:
                    g = _input_gradients_full(model, x, y, loss_fn)
                yield (start, x, y, g, *(e[start : start + batch_size].to(device, torch.float32) for e in extra))
        finally:
            model.train(was_training)


def check_measure(measure: str) -> str:
    """``measure`` if it is one of :data:`MEASURES`, else ValueError listing them."""
    if measure == "lin2022":
        raise ValueError("measure 'lin2022' is ambiguous: use 'freqbias' (an exact port of Lin et al.'s "
                         "FreqBias grad.py) or 'lin2022_centred' (its idea on this project's centred rings, "
                         "what 'lin2022' used to compute); the README's \"The measurement\" compares them")
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; allowed: {', '.join(map(repr, MEASURES))}")
    return measure


def _min_max(profile: torch.Tensor) -> torch.Tensor:
    lo = profile.min(-1, keepdim=True)[0]
    hi = profile.max(-1, keepdim=True)[0]
    return (profile - lo) / (hi - lo).clamp_min(torch.finfo(profile.dtype).tiny)


def lin2022_centred_profile(g: torch.Tensor) -> torch.Tensor:
    """Lin et al.'s idea on this module's rings (centred at DC, rounded radius, corners beyond
    Nyquist left out): per image the |FFT| ring means k = 0 … K, bins 0 and K set to 0 and the
    rest min–max scaled to [0, 1]. ``g`` (B, N, N) → (B, N/2 + 1); x-axis k/K."""
    amp = radial_psd(g, magnitude=True)
    out = torch.zeros_like(amp)
    out[..., 1:-1] = _min_max(amp[..., 1:-1])
    return out


@lru_cache(maxsize=16)
def _freqbias_rings(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """grad.py's ``azimuthalAverage`` bins for an n×n fftshifted spectrum: ring index floor(r),
    r the distance from ((n−1)/2, (n−1)/2), the pixel grid's centre (fftshift puts DC at n/2);
    returns (ring of each pixel, pixels per ring, m = the largest ring, the corner's)."""
    y, x = np.indices((n, n))
    centre = np.array([(x.max() - x.min()) / 2.0, (y.max() - y.min()) / 2.0])
    ring = np.hypot(x - centre[0], y - centre[1]).astype(int)
    m = int(ring.max())
    counts = np.bincount(ring.ravel(), minlength=m + 1)
    if (counts == 0).any():  # grad.py: "Assumes all radii represented"
        raise ValueError(f"freqbias: a ring between 0 and {m} is empty at N={n}; grad.py's binning needs every radius")
    return (torch.from_numpy(ring.ravel()).to(device), torch.from_numpy(counts).to(device, torch.float64), m)


def freqbias_profile(g: torch.Tensor) -> torch.Tensor:
    """FreqBias ``grad.py`` ``cal_power``'s per-image profile: |fftshift(fft2(g))| averaged over
    rings floor(r) = 1 … m − 1 (ring 0 and the corner ring m dropped, as ``azimuthalAverage``'s
    cumulative sums do), min–max scaled to [0, 1] per image. Float64.

    ``g`` (B, N, N) → (B, m − 1), m = floor((N − 1)/√2) (43 bins at 64 px); x-axis
    :func:`measure_axis`. One deviation: a constant profile (e.g. a zero gradient) gives 0s here
    where grad.py divides 0 by 0."""
    if g.ndim != 3 or g.shape[-1] != g.shape[-2]:
        raise ValueError(f"expected (B, N, N) gradient maps, got shape {tuple(g.shape)}")
    ring, counts, m = _freqbias_rings(g.shape[-1], str(g.device))
    mag = torch.fft.fftshift(torch.fft.fft2(g.double()), dim=(-2, -1)).abs().flatten(-2)
    sums = torch.zeros(g.shape[0], m + 1, dtype=torch.float64, device=g.device).index_add_(-1, ring, mag)
    return _min_max(sums[:, 1:m] / counts[1:m])


def measure_axis(measure: str, size: int) -> np.ndarray:
    """The x-axis of a ``measure``'s spectrum at image size N = ``size``: ``power`` and
    ``lin2022_centred`` bin k = 0 … K at k/K (K = N/2, 1 = Nyquist along an axis); ``freqbias``
    bin j = 1 … m − 1 (floored radius from the grid centre) at j/m, m = floor((N − 1)/√2) the
    corner radius (so the axis-Nyquist ring sits near 0.71)."""
    if check_measure(measure) == "freqbias":
        m = _freqbias_rings(int(size), "cpu")[2]
        return np.arange(1, m) / m
    return frequency_axis(int(size) // 2 + 1)


_PROFILES = {"power": lambda g: radial_psd(g), "freqbias": freqbias_profile, "lin2022_centred": lin2022_centred_profile}


CPU_PRIORITY_PIXELS = 2**19  # learning_priority's default batch on the CPU, in pixels


def learning_priority(
    model: torch.nn.Module,
    images,
    labels,
    *,
    batch_size: int | None = None,
    normalize: Normalize = "sum",
    loss: Callable | None = None,
    per_class: bool = False,
    measure: Measure = "power",
    autocast_dtype: torch.dtype | None = None,
):
    """The model's learning priority: radial PSD of its input gradients (the paper's Eq. 1).

    For each image x with label y: g = ∂L(f(x), y)/∂x with the model in eval mode (batch-norm
    statistics frozen), summed over channels to an N×N map; its ring-averaged power spectrum is
    averaged over all images and normalised. The model's train/eval mode is restored afterwards
    and its parameter gradients are left untouched.

    Args:
        model: classifier taking ``(B, C, N, N)`` and returning logits ``(B, classes)``.
        images: ``(n, C, N, N)`` float tensor or numpy array; moved to the model's device.
        labels: ``(n,)`` integer class labels.
        batch_size: images per backward pass; the result does not depend on it (up to float
            rounding). None: 64, and on the CPU at most ≈ 0.5 M pixels per batch (10 images at
            224 px), where a larger batch's activations fall out of cache (measured with
            bench/psd.py: BENCHMARKS.md).
        normalize: ``"sum"`` (a distribution over frequency), ``"max"`` (the paper's plots) or None.
        loss: ``loss(logits, labels) -> scalar`` summed over the batch; cross-entropy by default.
        per_class: return ``{label: spectrum}`` over the images of each class instead.
        measure: ``"power"`` (ring-mean |FFT|², this project's definition, N/2 + 1 bins),
            ``"freqbias"`` (Lin et al.'s grad.py exactly: per-image min–max scaled |FFT| over
            grad.py's rings, m − 1 bins, :func:`freqbias_profile`) or ``"lin2022_centred"``
            (:func:`lin2022_centred_profile`, N/2 + 1 bins). Anything else → ValueError. The
            x-axis of each: :func:`measure_axis`. grad.py's own output is ``normalize=None``.
        autocast_dtype: run the forward pass under ``torch.autocast`` (e.g. ``torch.bfloat16``);
            gradients and spectra are still accumulated in fp32.

    Returns:
        float32 CPU tensor ``(N//2 + 1,)`` (freqbias: ``(m − 1,)``), or a dict of them with
        ``per_class``.
    """
    profile = _PROFILES[check_measure(measure)]
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    for _, _, y, g in _gradient_batches(model, images, labels, batch_size, loss or _cross_entropy_sum, autocast_dtype):
        spectra = profile(g.sum(dim=1)).double().cpu()  # channels summed -> (B, N, N)
        keys = y.cpu().tolist() if per_class else [0] * len(y)
        for key in set(keys):
            rows = spectra[torch.tensor(keys) == key]
            sums[key] = sums.get(key, 0) + rows.sum(0)
            counts[key] = counts.get(key, 0) + rows.shape[0]
    result = {k: normalize_spectrum(sums[k] / counts[k], normalize).float() for k in sorted(sums)}
    return result if per_class else result[0]


# ------------------------------------------------------------------------------- summaries


def _as_numpy(p) -> np.ndarray:
    return p.detach().cpu().double().numpy() if isinstance(p, torch.Tensor) else np.asarray(p, dtype=np.float64)


def frequency_axis(n_bins: int) -> np.ndarray:
    """Normalised radial frequency ω̄_k = k/K for a spectrum of K + 1 bins."""
    return np.arange(n_bins) / (n_bins - 1)


def _unit_sum(p: np.ndarray) -> np.ndarray:
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("spectrum must be non-negative with a positive, finite sum")
    return p / total


def summarize(p, exclude_dc: bool = False) -> dict[str, float]:
    """Scalar summaries of a spectrum (renormalised to unit sum first).

    Returns a dict with ``centroid`` (Σ ω̄_k p_k), ``low``/``mid``/``high`` (mass with ω̄ in
    [0, ⅓), [⅓, ⅔), [⅔, 1]), ``entropy`` (nats) and ``peak`` (ω̄ of the largest bin). With
    ``exclude_dc`` the DC bin is dropped and the rest renormalised (the DC bin alone can hold
    close to half of a model's priority).
    """
    p = _as_numpy(p)
    omega = frequency_axis(p.shape[-1])
    if exclude_dc:
        p, omega = p[1:], omega[1:]
    p = _unit_sum(p)
    nz = p[p > 0]
    return {
        "centroid": float((omega * p).sum()),
        "low": float(p[omega < 1 / 3].sum()),
        "mid": float(p[(omega >= 1 / 3) & (omega < 2 / 3)].sum()),
        "high": float(p[omega >= 2 / 3].sum()),
        "entropy": float(-(nz * np.log(nz)).sum()),
        "peak": float(omega[int(np.argmax(p))]),
    }


def value_at(p, omega: float) -> float:
    """The spectrum's value at the bin nearest normalised frequency ``omega`` ∈ [0, 1]."""
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"omega must be in [0, 1], got {omega}")
    p = _as_numpy(p)
    return float(p[int(round(omega * (p.shape[-1] - 1)))])


def band_mass(p, omega: float, bandwidth: float) -> float:
    """Unit-sum mass of ``p`` within ±bandwidth/2 of normalised frequency ``omega`` (≥ 1 bin).

    Integrating over the band is steadier than ``value_at``, which reads one noisy ring.
    """
    p = _unit_sum(_as_numpy(p))
    w = frequency_axis(p.shape[-1])
    half = max(bandwidth / 2, 0.5 / (p.shape[-1] - 1))
    return float(p[np.abs(w - omega) <= half + 1e-12].sum())


def alignment(p, a) -> float:
    """A(p, a) = Σ_k p_k a_k of two spectra, each renormalised to unit sum."""
    p, a = _unit_sum(_as_numpy(p)), _unit_sum(_as_numpy(a))
    if p.shape != a.shape:
        raise ValueError(f"spectra must have the same bins, got {p.shape} and {a.shape}")
    return float(p @ a)


def _mean_ring_psd(images) -> np.ndarray:
    """Mean over images and channels of the radial PSD of each per-image, per-channel mean-subtracted
    map; ``(n, C, N, N)`` → (K+1,) float64 (bin 0 is 0)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected (n, C, N, N) images, got shape {x.shape}")
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    return radial_psd(x).reshape(-1, x.shape[-1] // 2 + 1).mean(0)


def artifact_weight(images, artifacted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of each ring's power in artifact-carrying images is the artifact's.

    P_art(k) = mean radial PSD of A(x) − x, P_img(k) = mean radial PSD of x (over images and
    channels, the same rings as the learning priority), w_k = P_art / (P_art + P_img) for k ≥ 1
    (0 where both are 0), w_0 = 0. Each map is mean-subtracted first: ring 0 holds only the DC
    coefficient, so this changes nothing at k ≥ 1 and keeps (Σx)² from dominating the unit-sum
    spectra returned. Fluctuations of the mean carry no spatial frequency.

    Args:
        images: clean images x, ``(n, C, N, N)``, N even, in the model's input units ([0, 1]).
        artifacted: A(x), same shape (the artifact applied to the same images).

    Returns:
        ``(w, p_art, p_img)``: w (K+1,) in [0, 1], and P_art, P_img each (K+1,) unit-sum (all
        zeros when the artifact changes nothing), float64.
    """
    x, ax = np.asarray(images, dtype=np.float64), np.asarray(artifacted, dtype=np.float64)
    if x.shape != ax.shape:
        raise ValueError(f"images and artifacted must have one shape, got {x.shape} and {ax.shape}")
    p_art, p_img = _mean_ring_psd(ax - x), _mean_ring_psd(x)
    total = p_art + p_img
    w = np.divide(p_art, total, out=np.zeros_like(total), where=total > 0)
    w[0] = 0.0

    def unit(p):
        return p / p.sum() if p.sum() > 0 else np.zeros_like(p)

    return w, unit(p_art), unit(p_img)


def shortcut_alignment(p, w) -> float:
    """A(p) = Σ_{k≥1} p̃_k w_k: the DC-free priority p̃ (``p[1:]`` renormalised to unit sum)
    weighted by the artifact's share of each ring's power ``w`` (:func:`artifact_weight`).

    ``p`` (K+1,) non-negative, ``w`` (K+1,) in [0, 1]; returns a float in [0, 1]: 1 when all of
    the priority lies where the artifact dominates the images, 0 where it is absent. A constant
    w = c gives c for every priority."""
    p, w = _as_numpy(p), _as_numpy(w)
    if p.shape != w.shape or p.ndim != 1:
        raise ValueError(f"priority and weight must be (K+1,) on the same bins, got {p.shape} and {w.shape}")
    if np.any(w < -1e-12) or np.any(w > 1 + 1e-12):
        raise ValueError("the artifact weight must lie in [0, 1]")
    return float(_unit_sum(p[1:]) @ w[1:])


def directional_derivatives(model: torch.nn.Module, images, directions, labels, *,
                            batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the first-order loss change along ``directions``: g·δ with g = ∂ℓ(f(x), y)/∂x
    (cross-entropy on the true label, eval mode, fp32; the gradient code path of
    :func:`learning_priority`), and |g|²·|δ|² (the Cauchy–Schwarz bound of (g·δ)²).

    ``images``, ``directions``: ``(n, C, N, N)`` (δ in image units); ``labels`` (n,). Returns two
    float64 arrays (n,): g·δ in loss units, and |g|²|δ|². ℓ(x + εδ) − ℓ(x) = ε g·δ + O(ε²)."""
    if tuple(np.shape(directions)) != tuple(np.shape(images)):
        raise ValueError(f"directions must have the images' shape {tuple(np.shape(images))}, got {tuple(np.shape(directions))}")
    dots, bounds = [], []
    for _, _, _, g, d in _gradient_batches(model, images, labels, batch_size, _cross_entropy_sum, None, directions):
        g, d = g.double().flatten(1), d.double().flatten(1)
        dots.append((g * d).sum(1).cpu())
        bounds.append((g.square().sum(1) * d.square().sum(1)).cpu())
    return torch.cat(dots).numpy(), torch.cat(bounds).numpy()


def artifact_sensitivity(model: torch.nn.Module, images, artifacted, labels, *,
                         batch_size: int | None = None) -> dict[str, float]:
    """The model's first-order loss sensitivity along the real artifact δ = A(x) − x.

    Returns ``{"sensitivity": E_x[(g·δ)²], "relative": E_x[(g·δ)²] / E_x[|g|²|δ|²]}``: the first
    in (loss units)² (how much one artifact application moves the loss, squared: sign-free, as
    the artifact may raise or lower it), the second scale-free in [0, 1] (the gradient-weighted
    cos² of g and δ; 1 when the gradient points along the artifact; NaN when δ or g is 0 on every
    image). Shapes as :func:`directional_derivatives`."""
    x = np.asarray(images, dtype=np.float32)
    delta = np.asarray(artifacted, dtype=np.float32) - x
    dots, bounds = directional_derivatives(model, x, delta, labels, batch_size=batch_size)
    sq = float(np.mean(dots**2))
    bound = float(np.mean(bounds))
    return {"sensitivity": sq, "relative": sq / bound if bound > 0 else float("nan")}


def cosine(p, a) -> float:
    """Cosine similarity of two spectra."""
    p, a = _as_numpy(p), _as_numpy(a)
    if p.shape != a.shape:
        raise ValueError(f"spectra must have the same bins, got {p.shape} and {a.shape}")
    return float(p @ a / (np.linalg.norm(p) * np.linalg.norm(a)))


def spectral_slope(psd, k_min: int = 1, k_max: int | None = None) -> float:
    """Least-squares slope of log PSD vs log k over bins k_min … k_max (a 1/f^α field gives −α)."""
    p = _as_numpy(psd)
    k_max = p.shape[-1] - 1 if k_max is None else k_max
    k = np.arange(k_min, k_max + 1)
    if len(k) < 2 or np.any(p[k] <= 0):
        raise ValueError("need at least two positive bins to fit a slope")
    return float(np.polyfit(np.log(k), np.log(p[k]), 1)[0])

