"""Source data editing (docs/SCIENCE.md, docs/SHORTCUTS.md): move a pretraining source's spectrum, and
with it the learning priority of the models pretrained on it.

``get_edit(family, strength, **params)`` returns an :class:`Edit`; ``edit(images, rng)`` returns
edited float32 images clipped to [0, 1] (the clip is part of every edit: a gain can push pixels out
of range). ``strength == 0`` is the identity: a bit-identical copy, no FFT round trip.

Families:

* ``none`` — identity at any strength.
* ``band_gain`` — x' = F⁻¹(F(x)·(1 + s·B(ω))), B a Gaussian bump in normalised radial frequency
  centred on ``omega`` with full width at half maximum ``bandwidth`` (peak 1). s ∈ [−1, 10];
  s < 0 attenuates the band, s = −1 removes its centre.
* ``blend_lowpass`` — x' = (1 − s)·x + s·LP(x), LP a Butterworth low-pass (``order``) at cutoff
  ``omega``; s ∈ [0, 1].
* ``blend_highpass`` — x' = (1 − s)·x + s·HP(x), HP(x) = x − LP(x) + mean(x): the high-pass keeps
  each image's mean so the blend stays in range; s ∈ [0, 1].
* ``inoculate`` — each image independently, with probability s ∈ [0, 1] and regardless of its
  label, gets the artifact ``artifact`` (a family of :mod:`spectral_ray.artifacts`) with the
  remaining params as the artifact's parameters.

``edit_dataset(dataset, edit, seed)`` edits a whole dataset; ``get_edited_dataset(name, …)`` does
so through the dataset registry and caches the edited arrays on disk.
"""

from __future__ import annotations

import math

import numpy as np

from spectral_ray.artifacts import apply_filter, get_artifact, lowpass_transfer, radius_grid
from spectral_ray.data.registry import ImageDataset, get_dataset, load_or_build
from spectral_ray.families import ImageTransform, Param, Registry

__all__ = ["Edit", "get_edit", "list_edits", "edit_dataset", "get_edited_dataset", "is_edit", "EDITS"]

# name -> Family; families register themselves below with @EDITS.register(...)
EDITS = Registry("edit")

_CHUNK = 512

# Names an analysis table may hold for "no edit" (a missing key reads as NaN there).
NO_EDIT_NAMES = frozenset({"none", "", "None", "identity", "null"})


def is_edit(family, strength) -> bool:
    """The one rule for "is this source edited?": any family but ``none`` at a strength ≠ 0.

    A negative strength is an edit (``band_gain`` at s < 0 attenuates its band); strength 0 is
    the identity for every family. Unset values (None, NaN, the names in :data:`NO_EDIT_NAMES`)
    mean unedited. Used by the config schema, the backbone store, :class:`Edit` and analysis."""
    if family is None or (isinstance(family, float) and math.isnan(family)) or str(family) in NO_EDIT_NAMES:
        return False
    try:
        s = float(strength)
    except (TypeError, ValueError):
        return False
    return math.isfinite(s) and s != 0.0


class Edit(ImageTransform):
    """A source-data edit: ``edit(images, rng) -> images``."""

    def __init__(self, family: str, strength: float, params: dict):
        self.family = family
        self.strength = strength
        self.params = dict(params)
        self._fn = EDITS[family].fn

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Edit({self.family!r}, strength={self.strength!r}{args})"

    @property
    def is_identity(self) -> bool:
        return not is_edit(self.family, self.strength)

    def _apply(self, x, rng):
        return self._fn(x, rng, self.strength, self.params)

    def config(self) -> dict:
        """A JSON-able description (family, strength, params) for cache keys and reports."""
        return {"family": self.family, "strength": self.strength, "params": dict(self.params)}


@EDITS.register("none", strength=Param(0.0, -math.inf, math.inf), summary="identity at any strength")
def _none(x, rng, s, p):
    return x


def band_gain_transfer(size: int, omega: float, bandwidth: float) -> np.ndarray:
    """B(ω) on the rfft2 grid: Gaussian bump at ``omega``, FWHM ``bandwidth``, peak 1."""
    sigma = bandwidth / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return np.exp(-0.5 * ((radius_grid(size) - omega) / sigma) ** 2)


@EDITS.register(
    "band_gain",
    strength=Param(0.0, -1.0, 10.0),
    params={"omega": Param(0.25, 0.0, 1.0), "bandwidth": Param(0.1, 0.0, 2.0, lo_open=True)},
    trial_keys={"edit_omega": "omega"},
    summary="x' = F⁻¹(F(x)·(1 + s·B(ω))), B a Gaussian bump at omega with FWHM bandwidth",
)
def _band_gain(x, rng, s, p):
    return apply_filter(x, 1.0 + s * band_gain_transfer(x.shape[-1], p["omega"], p["bandwidth"]))


def _lowpassed(x, p):
    return apply_filter(x, lowpass_transfer(x.shape[-1], p["omega"], "butterworth", p["order"]))


_FILTER = {"omega": Param(0.25, 0.0, 1.0, lo_open=True), "order": Param(2, 1, 16, integer=True)}


@EDITS.register("blend_lowpass", strength=Param(0.0, 0.0, 1.0), params=_FILTER, trial_keys={"edit_omega": "omega"},
                summary="x' = (1 − s)·x + s·LP(x), LP a Butterworth low-pass at omega")
def _blend_lowpass(x, rng, s, p):
    return (1.0 - s) * x + s * _lowpassed(x, p)


@EDITS.register("blend_highpass", strength=Param(0.0, 0.0, 1.0), params=_FILTER, trial_keys={"edit_omega": "omega"},
                summary="x' = (1 − s)·x + s·HP(x), HP(x) = x − LP(x) + mean(x)")
def _blend_highpass(x, rng, s, p):
    high = x - _lowpassed(x, p) + x.mean(axis=(-2, -1), keepdims=True)
    return (1.0 - s) * x + s * high


def _inoculate_params(params: dict) -> dict:
    """``artifact`` (family name, default ``"band"``) + that artifact's own parameters, validated."""
    params = dict(params)
    art = get_artifact(params.pop("artifact", "band"), **params)
    return {"artifact": art.family, "artifact_params": art.params}


@EDITS.register("inoculate", strength=Param(0.0, 0.0, 1.0), parse=_inoculate_params,
                summary="each image, with probability s and regardless of label, gets an artifact")
def _inoculate(x, rng, s, p):
    art = get_artifact(p["artifact"], **p["artifact_params"])
    hit = rng.random(len(x)) < s
    out = x.copy()
    if hit.any():
        out[hit] = art(x[hit], rng)
    return out


def list_edits() -> list[str]:
    return list(EDITS)


def get_edit(family: str, strength: float = 0.0, **params) -> Edit:
    """The edit ``family`` at ``strength`` with ``params`` (defaults filled in, all validated).

    ``inoculate`` takes ``artifact`` (family name, default ``"band"``) and that artifact's own
    parameters. Unknown family/parameter or a value out of range →
    :class:`~spectral_ray.families.ParamError` (a ValueError) naming it.
    """
    fam = EDITS.family(family)
    if family != "none":
        strength = fam.strength.check(family, "strength", strength)
    return Edit(family, float(strength), fam.check(params))


def edit_dataset(dataset: ImageDataset, edit: Edit, seed: int) -> ImageDataset:
    """``dataset`` with every image edited (in chunks, one generator seeded with ``seed``);
    labels, groups and classes are kept; ``params`` gains an ``edit`` entry."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xED17]))
    if edit.is_identity:
        images = dataset.images.copy()
    else:
        images = np.empty(dataset.images.shape, np.float32)
        for start in range(0, len(dataset), _CHUNK):
            images[start : start + _CHUNK] = edit(dataset.images[start : start + _CHUNK], rng)
    return ImageDataset(
        images=images,
        labels=dataset.labels.copy(),
        classes=list(dataset.classes),
        groups=None if dataset.groups is None else dataset.groups.copy(),
        name=dataset.name,
        params=dict(dataset.params, edit=dict(edit.config(), seed=int(seed))),
    )


def get_edited_dataset(
    name: str,
    edit_family: str,
    strength: float,
    edit_params: dict | None = None,
    seed: int = 0,
    *,
    dataset_seed: int | None = None,
    use_cache: bool = True,
    **dataset_params,
) -> ImageDataset:
    """Registry dataset ``name`` (built with ``dataset_params``) edited by
    ``get_edit(edit_family, strength, **edit_params)`` with ``seed``, cached on disk.

    ``seed`` is the *edit's* seed; the dataset's own ``seed`` parameter is ``dataset_seed``
    (None = the dataset's default), since ``seed`` cannot also travel in ``dataset_params``.

    The cache key is the dataset's full parameters + the edit's family, strength, params and seed
    (+ the cache's code version), so trials load the edited arrays instead of recomputing them.
    An identity edit returns the registry dataset itself (no second copy on disk).
    """
    edit = get_edit(edit_family, strength, **dict(edit_params or {}))
    if dataset_seed is not None:
        dataset_params["seed"] = int(dataset_seed)
    base = get_dataset(name, use_cache=use_cache, **dataset_params)
    if edit.is_identity:
        return base
    key_params = dict(base.params, edit=dict(edit.config(), seed=int(seed)))

    def build() -> ImageDataset:
        ds = edit_dataset(base, edit, seed)
        ds.params = key_params
        return ds

    if not use_cache:
        return build()
    ds = load_or_build(name, key_params, build, edited=True)
    ds.name = name
    return ds
