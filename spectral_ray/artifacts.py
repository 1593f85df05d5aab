"""Frequency shortcuts: artifacts planted into target images (docs/SCIENCE.md, docs/SHORTCUTS.md).

``get_artifact(family, **params)`` returns an :class:`Artifact`; call it as
``artifact(images, rng) -> images`` on float32 ``(n, C, N, N)`` arrays in [0, 1]. The output has
the same shape and dtype and is clipped to [0, 1]. ``artifact.signature(size)`` is the unit-sum
radial PSD of ``artifact(x) − x`` averaged over a fixed reference set of synthetic 1/f² images
(:func:`reference_images`), the artifact's spectral fingerprint used for alignment.

Families register themselves with ``@FAMILIES.register(name, params=…, trial_keys=…)``
(:mod:`spectral_ray.families`); ``list_artifacts()``, ``FAMILIES[name].params``.

* ``none`` — identity (clean runs). Its signature is all zeros.
* ``band`` — additive random-phase pattern with its energy in a ring of normalised radial
  frequency ``omega`` ∈ (0, 1] (1 = Nyquist, bin K = N/2), ``bandwidth`` wide (normalised, total
  width; never narrower than one ring), standard deviation ``amplitude`` × the image's own std.
  The same pattern is added to every channel of an image.
* ``photon_noise`` — CT dose reduction, the lab's recipe (DovileDo/source-matters
  ``include_noise.py``) line by line (:func:`lab_photon_noise`): 8-bit dither, HU in the display
  window ``disp_window`` [−1200, 800], μ = HU·(``mu_water`` − ``mu_air``)/1000 + ``mu_water``,
  Poisson(exp(−μ)·N₀)/N₀, −log, back, window clip, 8 bits. The artifact images get N₀ =
  ``photons_per_pixel`` (1.5·10⁷); its ``baseline`` gives every image of the split N₀ =
  ``baseline_photons_per_pixel`` (2·10⁷; None = no baseline). ``mode="sinogram"`` draws the
  Poisson noise on the rays of a ``radon`` projection instead and adds the FBP of the noise.
* ``nlm`` — scikit-image non-local-means denoising (``h`` in image units, fast mode), which strips
  fine texture and high frequencies.
* ``lowpass`` — ideal or Butterworth low-pass (``order``) at normalised cutoff ``omega``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from spectral_ray.families import ImageTransform, Param, ParamError, Registry, check_params
from spectral_ray.spectrum import normalize_spectrum, radial_psd

__all__ = [
    "Artifact",
    "get_artifact",
    "list_artifacts",
    "artifact_defaults",
    "reference_images",
    "radius_grid",
    "FAMILIES",
    "Param",
    "ParamError",
    "check_params",
    "lab_photon_noise",
    "LAB_PHOTON_NOISE",
]

# name -> Family; families register themselves below with @FAMILIES.register(...)
FAMILIES = Registry("artifact")


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


class Artifact(ImageTransform):
    """A planted artifact: ``artifact(images, rng) -> images`` plus its spectral signature.

    ``baseline`` is the transform every image of a split gets when this artifact is planted
    (photon noise: the baseline dose), or None; on the artifact images the artifact replaces it.
    """

    def __init__(self, family: str, params: dict):
        self.family = family
        self.params = dict(params)
        self._fn = FAMILIES[family].fn

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Artifact({self.family!r}, {args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Artifact) and (self.family, self.params) == (other.family, other.params)

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted(self.params.items()))))

    @property
    def is_identity(self) -> bool:
        return self.family == "none"

    def _apply(self, x, rng):
        return self._fn(x, rng, self.params)

    @property
    def baseline(self) -> Artifact | None:
        rule = FAMILIES[self.family].baseline
        params = rule(self.params) if rule is not None else None
        return None if params is None else Artifact(self.family, params)

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


@FAMILIES.register("none", summary="identity (clean runs)")
def _none(x, rng, p):
    return x


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


@FAMILIES.register(
    "band",
    params={
        "omega": Param(0.5, 0.0, 1.0, lo_open=True),
        "amplitude": Param(0.1, 0.0, 10.0),
        "bandwidth": Param(0.05, 0.0, 1.0, lo_open=True),
    },
    trial_keys={"artifact_omega": "omega", "artifact_amplitude": "amplitude"},
    summary="additive random-phase ring at omega, std = amplitude × image std",
)
def _band(x, rng, p):
    n, _, size, _ = x.shape
    pattern = band_pattern(n, size, p["omega"], p["bandwidth"], rng)
    scale = p["amplitude"] * _image_std(x)
    return x + (scale[:, None, None] * pattern)[:, None].astype(np.float32)


# The lab's constants (DovileDo/source-matters, include_noise.py): attenuation of water and air as
# the lab sets them, the display window in HU, and the doses: every image 2·10⁷ photons per pixel,
# the artifact images 1.5·10⁷ instead.
LAB_PHOTON_NOISE = {"mu_water": 0.1837, "mu_air": 0.1662, "disp_window": (-1200.0, 800.0),
                    "photons_per_pixel": 1.5e7, "baseline_photons_per_pixel": 2e7}


def _poisson_log(mu: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """The lab's measurement: −log(max(10⁻⁸, Poisson(exp(−mu)·photons) / photons))."""
    proj = rng.poisson(np.exp(-mu) * photons) / photons
    return -np.log(np.maximum(1e-8, proj))


def _sinogram_measure(mu: np.ndarray, photons: float, rng: np.random.Generator, n_angles: int | None) -> np.ndarray:
    """``mu`` (n, C, N, N, the per-pixel line integrals of image mode) measured through a CT
    sinogram: the map mu/N (so N pixels of water integrate to mu_water) is projected
    (skimage ``radon``), Poisson noise drawn on each ray, and the ramp-filtered FBP of the
    *difference* noisy − clean added back, so only the noise, not FBP's discretisation error,
    enters the image."""
    from skimage.transform import iradon, radon

    n, c, size, _ = mu.shape
    theta = np.linspace(0.0, 180.0, n_angles or size, endpoint=False)
    out = np.empty_like(mu)
    for i in range(n):
        for ch in range(c):
            per_pixel = mu[i, ch] / size
            sino = radon(per_pixel, theta=theta, circle=False)
            delta = iradon(_poisson_log(sino, photons, rng) - sino, theta=theta, circle=False,
                           filter_name="ramp", output_size=size)
            out[i, ch] = mu[i, ch] + delta * size
    return out


def lab_photon_noise(x: np.ndarray, rng: np.random.Generator, p: dict) -> np.ndarray:
    """The lab's ``noise(img, PHOTONS_PER_PIXEL)`` on [0, 1] images, line by line.

    x·255 (the lab's 8-bit scale) + U(0, 1) quantisation dither → HU = v/255·(b − a) + a for the
    display window [a, b] → μ = HU·(μ_water − μ_air)/1000 + μ_water → −log(max(10⁻⁸,
    Poisson(exp(−μ)·N₀)/N₀)) (``mode="sinogram"``: on the projections, see
    :func:`_sinogram_measure`) → HU = 1000·(μ' − μ_water)/(μ_water − μ_air), clipped to the
    window → 0–255 → ``astype(uint8)`` (truncation, as the lab's) → /255. On a continuous input
    the dither and the truncation together are an unbiased stochastic rounding to 8 bits.
    Returns float64 (n, C, N, N) on the 1/255 grid.
    """
    lo, hi = p["disp_window"]
    mu_w, mu_a = p["mu_water"], p["mu_air"]
    img = x.astype(np.float64) * 255.0
    img = img + rng.uniform(0.0, 1.0, size=img.shape)
    img = img / 255.0 * (hi - lo) + lo
    img = img * (mu_w - mu_a) / 1000 + mu_w
    if p["mode"] == "image":
        proj = _poisson_log(img, p["photons_per_pixel"], rng)
    else:
        proj = _sinogram_measure(img, p["photons_per_pixel"], rng, p["n_angles"])
    recon = 1000 * (proj - mu_w) / (mu_w - mu_a)
    recon = np.clip(recon, lo, hi)
    recon = (recon - lo) / (hi - lo) * 255.0
    return recon.astype(np.uint8) / 255.0


def _check_photon_noise(p: dict) -> None:
    if not p["mu_air"] < p["mu_water"]:
        raise ParamError(f"photon_noise: parameter 'mu_air' must be below mu_water={p['mu_water']:g}, got {p['mu_air']:g}",
                         family="photon_noise", param="mu_air")


def _photon_noise_baseline(p: dict) -> dict | None:
    """Every image of the split is measured at the baseline dose (the artifact replaces it)."""
    if p["baseline_photons_per_pixel"] is None:
        return None
    return dict(p, photons_per_pixel=p["baseline_photons_per_pixel"])


FAMILIES.register(
    "photon_noise",
    params={
        "photons_per_pixel": Param(LAB_PHOTON_NOISE["photons_per_pixel"], 1.0, 1e12),
        "baseline_photons_per_pixel": Param(LAB_PHOTON_NOISE["baseline_photons_per_pixel"], 1.0, 1e12, allow_none=True),
        "mu_water": Param(LAB_PHOTON_NOISE["mu_water"], 0.0, 30.0, lo_open=True),
        "mu_air": Param(LAB_PHOTON_NOISE["mu_air"], 0.0, 30.0),
        "disp_window": Param(LAB_PHOTON_NOISE["disp_window"], -5000.0, 5000.0, pair=True),
        "mode": Param("image", choices=("image", "sinogram")),
        "n_angles": Param(None, 8, 2048, integer=True, allow_none=True),
    },
    summary="the lab's CT dose reduction: Poisson(exp(−mu)·photons_per_pixel) per pixel or per ray; "
            "every image of the split at baseline_photons_per_pixel",
    validate=_check_photon_noise,
    baseline=_photon_noise_baseline,
)(lab_photon_noise)


@FAMILIES.register(
    "nlm",
    params={
        "h": Param(0.02, 0.0, 1.0, lo_open=True),
        "patch_size": Param(5, 3, 15, integer=True),
        "patch_distance": Param(6, 1, 20, integer=True),
    },
    summary="scikit-image non-local-means denoising with strength h (image units)",
)
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


@FAMILIES.register(
    "lowpass",
    params={
        "omega": Param(0.5, 0.0, 1.0, lo_open=True),
        "kind": Param("butterworth", choices=("ideal", "butterworth")),
        "order": Param(4, 1, 16, integer=True),
    },
    trial_keys={"artifact_omega": "omega"},
    summary="ideal or Butterworth low-pass at normalised cutoff omega",
)
def _lowpass(x, rng, p):
    return apply_filter(x, lowpass_transfer(x.shape[-1], p["omega"], p["kind"], p["order"]))


def list_artifacts() -> list[str]:
    """Artifact family names."""
    return list(FAMILIES)


def artifact_defaults(family: str) -> dict:
    """Default parameters of ``family``."""
    return get_artifact(family).params


def get_artifact(family: str, **params) -> Artifact:
    """The artifact ``family`` with ``params`` (defaults filled in, all validated).

    Raises :class:`~spectral_ray.families.ParamError` (a ValueError) for an unknown family, an
    unknown parameter name, or a value outside its allowed range (the message names the
    parameter and the range; ``.param`` carries its name).
    """
    return Artifact(family, FAMILIES.family(family).check(params))
