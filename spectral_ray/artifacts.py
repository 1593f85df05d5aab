"""Frequency shortcuts: artifacts planted into target images (docs/SCIENCE.md, docs/SHORTCUTS.md).

``get_artifact(family, **params)`` returns an :class:`Artifact`; call it as
``artifact(images, rng) -> images`` on float32 ``(n, C, N, N)`` arrays in [0, 1]. The output has
the same shape and dtype and is clipped to [0, 1]. ``artifact.signature(size)`` is the unit-sum
radial PSD of ``artifact(x) − x`` averaged over a fixed reference set of synthetic 1/f² images
(:func:`reference_images`), the artifact's spectral fingerprint used for alignment.

Families (parameters, their ranges and defaults are in ``FAMILIES``; ``list_artifacts()``):

* ``none`` — identity (clean runs). Its signature is all zeros.
* ``band`` — additive random-phase pattern with its energy in a ring of normalised radial
  frequency ``omega`` ∈ (0, 1] (1 = Nyquist, bin K = N/2), ``bandwidth`` wide (normalised, total
  width; never narrower than one ring), standard deviation ``amplitude`` × the image's own std.
  The same pattern is added to every channel of an image.
* ``photon_noise`` — CT dose reduction. Image values x ∈ [0, 1] are read as a CT window
  (``hu_level``, ``hu_width``): HU = level + (x − ½)·width; attenuation line integral
  μ = ``mu_water``·(1 + HU/1000); counts ~ Poisson(N₀·exp(−μ)) (clamped at 0.5 photons),
  μ' = −log(counts/N₀), mapped back to x. ``mode="sinogram"`` does the faithful version: the
  attenuation map is projected (skimage ``radon``, ``n_angles`` views, scaled so a path of water
  across the image integrates to ``mu_water``), Poisson noise is drawn on the projections and
  the *difference* FBP(noisy) − FBP(clean) (``iradon``, ramp filter) is added to the image, so
  that only the noise, not the FBP discretisation error, is the artifact.
* ``nlm`` — scikit-image non-local-means denoising (``h`` in image units, fast mode), which strips
  fine texture and high frequencies.
* ``lowpass`` — ideal or Butterworth low-pass (``order``) at normalised cutoff ``omega``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from spectral_ray.spectrum import normalize_spectrum, radial_psd

__all__ = [
    "Artifact",
    "get_artifact",
    "list_artifacts",
    "artifact_defaults",
    "reference_images",
    "radius_grid",
    "FAMILIES",
]


# ------------------------------------------------------------------------ parameter checking


@dataclass(frozen=True)
class Param:
    default: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    integer: bool = False
    choices: tuple | None = None
    allow_none: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = "integer" if self.integer else "number"
        left = "(" if self.lo_open else "["
        text = f"{kind} in {left}{self.lo:g}, {self.hi:g}]"
        return text + (" or None" if self.allow_none else "")

    def check(self, family: str, name: str, value):
        if value is None and self.allow_none:
            return None
        bad = ValueError(f"{family}: parameter {name!r} must be {self.describe()}, got {value!r}")
        if self.choices is not None:
            if value not in self.choices:
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad
        if self.integer and float(value) != int(value):
            raise bad
        v = float(value)
        if not math.isfinite(v) or v > self.hi or v < self.lo or (self.lo_open and v <= self.lo):
            raise bad
        return int(value) if self.integer else v


def check_params(family: str, spec: dict[str, Param], params: dict) -> dict:
    """Defaults filled in, values validated; unknown names and bad values raise ValueError."""
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(
            f"{family}: unknown parameter(s) {unknown}; allowed: "
            + "; ".join(f"{k} ({p.describe()})" for k, p in spec.items())
        )
    out = {}
    for name, p in spec.items():
        out[name] = p.check(family, name, params.get(name, p.default))
    return out


# ---------------------------------------------------------------------------- shared helpers


def radius_grid(n: int) -> np.ndarray:
    """Normalised radial frequency r/K (K = n/2) of every ``rfft2`` coefficient, shape (n, n//2+1)."""
    u = np.fft.fftfreq(n, d=1.0 / n)
    v = np.fft.rfftfreq(n, d=1.0 / n)
    return np.sqrt(u[:, None] ** 2 + v[None, :] ** 2) / (n // 2)


def apply_filter(images: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Multiply the rfft2 of every (…, N, N) image by ``transfer`` (n, n//2+1); float64 out."""
    n = images.shape[-1]
    return np.fft.irfft2(np.fft.rfft2(images.astype(np.float64)) * transfer, s=(n, n))


def _check_images(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images must be (n, C, N, N), got shape {x.shape}")
    if x.shape[-1] % 2:
        raise ValueError(f"image size must be even, got N={x.shape[-1]}")
    return x


@lru_cache(maxsize=16)
def _reference(size: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = radius_grid(size) * (size // 2)
    amp = 1.0 / np.maximum(r, 1.0)  # |F| ~ 1/f, power ~ 1/f²
    amp[0, 0] = 0.0
    noise = np.fft.rfft2(rng.standard_normal((n, size, size)))
    x = np.fft.irfft2(noise * amp, s=(size, size))
    x = (x - x.mean(axis=(-2, -1), keepdims=True)) / x.std(axis=(-2, -1), keepdims=True)
    x = np.clip(0.5 + 0.15 * x, 0.0, 1.0).astype(np.float32)[:, None]
    x.setflags(write=False)
    return x


def reference_images(size: int, n: int = 16, seed: int = 0) -> np.ndarray:
    """Fixed synthetic images for signatures: 1/f² Gaussian fields (power ∝ 1/f²), mean 0.5,
    std 0.15, clipped to [0, 1], shape (n, 1, size, size), read-only."""
    return _reference(int(size), int(n), int(seed))


# ------------------------------------------------------------------------------- the object


class Artifact:
    """A planted artifact: ``artifact(images, rng) -> images`` plus its spectral signature."""

    family: str = ""

    def __init__(self, family: str, params: dict, fn: Callable[[np.ndarray, np.random.Generator, dict], np.ndarray]):
        self.family = family
        self.params = dict(params)
        self._fn = fn

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Artifact({self.family!r}, {args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Artifact) and (self.family, self.params) == (other.family, other.params)

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted(self.params.items()))))

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = _check_images(images)
        if len(x) == 0 or self.family == "none":
            return x.astype(np.float32, copy=True)
        out = self._fn(x.astype(np.float32, copy=False), rng, self.params)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

    def signature(self, size: int, n_samples: int = 16, seed: int = 0) -> np.ndarray:
        """Unit-sum radial PSD (``size//2 + 1`` bins) of ``artifact(x) − x`` averaged over
        ``n_samples`` :func:`reference_images` (1/f² fields, mean 0.5, std 0.15). All zeros for
        an artifact that changes nothing (``none``)."""
        return _signature(self, int(size), int(n_samples), int(seed)).copy()


@lru_cache(maxsize=128)
def _signature(art: Artifact, size: int, n_samples: int, seed: int) -> np.ndarray:
    x = reference_images(size, n_samples, seed)
    diff = art(x, np.random.default_rng(seed + 1)).astype(np.float64) - x
    psd = radial_psd(diff[:, 0]).mean(0)
    if psd.sum() <= 0:
        return np.zeros(size // 2 + 1)
    return normalize_spectrum(psd, "sum")


# ---------------------------------------------------------------------------------- families


def _image_std(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).std(axis=1).astype(np.float64)


def band_pattern(n_images: int, size: int, omega: float, bandwidth: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-std random-phase patterns (n_images, size, size) with energy only in the ring
    |r/K − omega| ≤ max(bandwidth/2, ½ ring)."""
    k = size // 2
    half = max(bandwidth / 2.0, 0.5 / k)
    mask = (np.abs(radius_grid(size) - omega) <= half + 1e-9).astype(np.float64)
    pattern = apply_filter(rng.standard_normal((n_images, size, size)), mask)
    std = pattern.reshape(n_images, -1).std(axis=1)
    return pattern / np.maximum(std, 1e-12)[:, None, None]


def _band(x, rng, p):
    n, _, size, _ = x.shape
    pattern = band_pattern(n, size, p["omega"], p["bandwidth"], rng)
    scale = p["amplitude"] * _image_std(x)
    return x + (scale[:, None, None] * pattern)[:, None].astype(np.float32)


def _hu_to_mu(x, p):
    hu = p["hu_level"] + (x.astype(np.float64) - 0.5) * p["hu_width"]
    return p["mu_water"] * (1.0 + hu / 1000.0)


def _mu_to_x(mu, p):
    hu = (mu / p["mu_water"] - 1.0) * 1000.0
    return (hu - p["hu_level"]) / p["hu_width"] + 0.5


def _poisson_log(mu: np.ndarray, n0: float, rng: np.random.Generator) -> np.ndarray:
    counts = rng.poisson(n0 * np.exp(-mu)).astype(np.float64)
    return -np.log(np.maximum(counts, 0.5) / n0)


# Default photons per ray when n0 is None: the lab's artifact dose in the image domain; in the
# sinogram domain FBP amplifies projection noise (≈ 7–8× in std at 64 px), so the default dose is
# raised 60× to give about the same added noise std (docs/SHORTCUTS.md).
N0_DEFAULT = {"image": 1.5e7, "sinogram": 9e8}


def _photon_noise(x, rng, p):
    n0 = p["n0"] if p["n0"] is not None else N0_DEFAULT[p["mode"]]
    if p["mode"] == "image":
        mu = _hu_to_mu(x, p)
        return _mu_to_x(_poisson_log(mu, n0, rng), p)
    from skimage.transform import iradon, radon

    n, c, size, _ = x.shape
    theta = np.linspace(0.0, 180.0, p["n_angles"] or size, endpoint=False)
    out = np.empty_like(x, dtype=np.float64)
    # mu per pixel so that `size` pixels of water integrate to mu_water.
    per_pixel = _hu_to_mu(x, p) / size
    for i in range(n):
        for ch in range(c):
            sino = radon(per_pixel[i, ch], theta=theta, circle=False)
            noisy = _poisson_log(sino, n0, rng)
            delta = iradon(noisy - sino, theta=theta, circle=False, filter_name="ramp", output_size=size)
            out[i, ch] = _mu_to_x(per_pixel[i, ch] * size + delta * size, p)
    return out


def _nlm(x, rng, p):
    from skimage.restoration import denoise_nl_means

    out = np.empty_like(x)
    multi = x.shape[1] > 1
    for i in range(len(x)):
        img = np.moveaxis(x[i], 0, -1) if multi else x[i, 0]
        den = denoise_nl_means(
            img.astype(np.float64),
            h=p["h"],
            patch_size=p["patch_size"],
            patch_distance=p["patch_distance"],
            fast_mode=True,
            channel_axis=-1 if multi else None,
        )
        out[i] = np.moveaxis(den, -1, 0) if multi else den
    return out


def lowpass_transfer(size: int, omega: float, kind: str = "butterworth", order: int = 4) -> np.ndarray:
    """rfft2 transfer function of a radial low-pass at normalised cutoff ``omega``."""
    r = radius_grid(size)
    if kind == "ideal":
        return (r <= omega + 1e-9).astype(np.float64)
    return 1.0 / (1.0 + (r / omega) ** (2 * order))


def _lowpass(x, rng, p):
    return apply_filter(x, lowpass_transfer(x.shape[-1], p["omega"], p["kind"], p["order"]))


FAMILIES: dict[str, tuple[dict[str, Param], Callable, str]] = {
    "none": ({}, lambda x, rng, p: x, "identity (clean runs)"),
    "band": (
        {
            "omega": Param(0.5, 0.0, 1.0, lo_open=True),
            "amplitude": Param(0.1, 0.0, 10.0),
            "bandwidth": Param(0.05, 0.0, 1.0, lo_open=True),
        },
        _band,
        "additive random-phase ring at omega, std = amplitude × image std",
    ),
    "photon_noise": (
        {
            "n0": Param(None, 1.0, 1e12, allow_none=True),
            "mu_water": Param(10.0, 0.0, 30.0, lo_open=True),
            "hu_level": Param(40.0, -1000.0, 3000.0),
            "hu_width": Param(100.0, 1.0, 4000.0),
            "mode": Param("image", choices=("image", "sinogram")),
            "n_angles": Param(None, 8, 2048, integer=True, allow_none=True),
        },
        _photon_noise,
        "CT dose reduction: Poisson(N0·exp(−mu)) in the image or the sinogram domain",
    ),
    "nlm": (
        {
            "h": Param(0.02, 0.0, 1.0, lo_open=True),
            "patch_size": Param(5, 3, 15, integer=True),
            "patch_distance": Param(6, 1, 20, integer=True),
        },
        _nlm,
        "scikit-image non-local-means denoising with strength h (image units)",
    ),
    "lowpass": (
        {
            "omega": Param(0.5, 0.0, 1.0, lo_open=True),
            "kind": Param("butterworth", choices=("ideal", "butterworth")),
            "order": Param(4, 1, 16, integer=True),
        },
        _lowpass,
        "ideal or Butterworth low-pass at normalised cutoff omega",
    ),
}


def list_artifacts() -> list[str]:
    """Artifact family names."""
    return list(FAMILIES)


def artifact_defaults(family: str) -> dict:
    """Default parameters of ``family``."""
    return get_artifact(family).params


def get_artifact(family: str, **params) -> Artifact:
    """The artifact ``family`` with ``params`` (defaults filled in, all validated).

    Raises ValueError for an unknown family, an unknown parameter name, or a value outside its
    allowed range (the message names the parameter and the range).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown artifact family {family!r}; families: {', '.join(FAMILIES)}")
    spec, fn, _ = FAMILIES[family]
    return Artifact(family, check_params(family, spec, params), fn)
