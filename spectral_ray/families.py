"""What artifacts (:mod:`spectral_ray.artifacts`) and source edits (:mod:`spectral_ray.editing`)
share: parameter specs, the family registries and the one ``__call__`` of an image transform.

A family is registered with a decorator on its function, declaring everything about it in one
place::

    @ARTIFACTS.register("band", params={"omega": Param(0.5, 0.0, 1.0, lo_open=True), ...},
                        trial_keys={"artifact_omega": "omega", "artifact_amplitude": "amplitude"},
                        summary="additive random-phase ring at omega")
    def _band(x, rng, p): ...

``trial_keys`` maps the :class:`~spectral_ray.config.TrialConfig` keys that feed the family to the
parameter each sets; the config reads them from here (no family names in the config). A bad value
raises :class:`ParamError`, a ``ValueError`` that carries the family and the parameter's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spectral_ray import registries

__all__ = ["Param", "ParamError", "check_params", "Family", "Registry", "ImageTransform", "check_images"]


class ParamError(ValueError):
    """A bad family name, parameter name or value. ``param`` is the parameter at fault (None for
    an unknown family), ``unknown`` is True when ``param`` is a name the family does not have."""

    def __init__(self, message: str, *, family: str, param: str | None = None, unknown: bool = False):
        super().__init__(message)
        self.family = family
        self.param = param
        self.unknown = unknown


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


@dataclass(frozen=True)
class Param:
    """One parameter: its default and what is allowed. Numbers lie in [lo, hi] (``lo_open``:
    (lo, hi]); ``choices`` lists the allowed values of a categorical one; ``pair`` takes an
    increasing pair of numbers (lo < a < b ≤ hi, e.g. a display window), returned as a tuple."""

    default: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    integer: bool = False
    choices: tuple | None = None
    allow_none: bool = False
    pair: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = "integer" if self.integer else "number"
        left = "(" if self.lo_open else "["
        text = f"{kind} in {left}{self.lo:g}, {self.hi:g}]"
        if self.pair:
            text = f"an increasing pair [a, b] of numbers in [{self.lo:g}, {self.hi:g}]"
        return text + (" or None" if self.allow_none else "")

    def check(self, family: str, name: str, value):
        if value is None and self.allow_none:
            return None
        bad = ParamError(f"{family}: parameter {name!r} must be {self.describe()}, got {value!r}", family=family, param=name)
        if self.choices is not None:
            if value not in self.choices:
                raise bad
            return value
        if self.pair:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
                raise bad
            a, b = value
            if not (_is_number(a) and _is_number(b) and self.lo <= float(a) < float(b) <= self.hi):
                raise bad
            return (float(a), float(b))
        if not _is_number(value):
            raise bad
        if self.integer and float(value) != int(value):
            raise bad
        v = float(value)
        if not math.isfinite(v) or v > self.hi or v < self.lo or (self.lo_open and v <= self.lo):
            raise bad
        return int(value) if self.integer else v


def check_params(family: str, spec: Mapping[str, Param], params: Mapping) -> dict:
    """Defaults filled in, values validated; unknown names and bad values raise :class:`ParamError`."""
    unknown = sorted(set(params) - set(spec))
    if unknown:
        allowed = "; ".join(f"{k} ({p.describe()})" for k, p in spec.items()) or "none"
        raise ParamError(f"{family}: unknown parameter(s) {unknown}; allowed: {allowed}",
                         family=family, param=unknown[0], unknown=True)
    return {name: p.check(family, name, params.get(name, p.default)) for name, p in spec.items()}


def check_images(images) -> np.ndarray:
    """``images`` as an array, checked to be ``(n, C, N, N)`` with N even."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images must be (n, C, N, N), got shape {x.shape}")
    if x.shape[-1] % 2:
        raise ValueError(f"image size must be even, got N={x.shape[-1]}")
    return x


@dataclass(frozen=True)
class Family:
    """A registered artifact or edit family and its facts.

    ``fn`` is ``fn(x, rng, params)`` for an artifact, ``fn(x, rng, strength, params)`` for an
    edit (x float32 ``(n, C, N, N)``); ``params`` its parameter spec; ``trial_keys`` the
    TrialConfig keys that set a parameter (``{"artifact_omega": "omega"}``); ``strength`` the
    allowed edit strengths (edits only); ``validate(params)`` an optional cross-parameter check
    raising :class:`ParamError`; ``parse(params) -> params`` replaces the spec check for a family
    whose parameters are another family's (``inoculate``); ``baseline(params)`` optional parameters of the transform every
    image of a split gets when this artifact is planted (None: no baseline; artifacts only)."""

    name: str
    fn: Callable
    params: Mapping[str, Param]
    summary: str = ""
    trial_keys: Mapping[str, str] = field(default_factory=dict)
    strength: Param | None = None
    validate: Callable[[dict], None] | None = None
    parse: Callable[[Mapping], dict] | None = None
    baseline: Callable[[dict], dict | None] | None = None

    def check(self, params: Mapping) -> dict:
        """``params`` validated, defaults filled in."""
        if self.parse is not None:
            return self.parse(params)
        checked = check_params(self.name, self.params, params)
        if self.validate is not None:
            self.validate(checked)
        return checked

    def kwargs(self, trial: Mapping, extra: Mapping | None = None) -> dict:
        """Family parameters from a trial: ``extra`` (its ``*_params`` dict) overridden by the
        trial keys this family reads that are set (not None)."""
        kw = dict(extra or {})
        for key, name in self.trial_keys.items():
            if trial.get(key) is not None:
                kw[name] = trial[key]
        return kw

    def trial_key(self, param: str | None) -> str | None:
        """The trial key that sets ``param``, if the family declares one."""
        return next((key for key, name in self.trial_keys.items() if name == param), None)


class Registry(registries.Registry[Family]):
    """name -> :class:`Family` for one kind (``artifact`` or ``edit``), registration order kept:
    the project's :class:`~spectral_ray.registries.Registry` whose entries are built from the
    facts given to :meth:`register`, with the trial keys the families read."""

    def __init__(self, kind: str):
        super().__init__(f"{kind} family")
        self.kind = kind

    def register(self, name: str, *, params: Mapping[str, Param] | None = None, summary: str = "",
                 trial_keys: Mapping[str, str] | None = None, **facts) -> Callable:
        """Decorator: register the decorated function as family ``name`` (see :class:`Family`)."""
        params = dict(params or {})
        trial_keys = dict(trial_keys or {})

        def make(fn: Callable) -> Family:
            for key, param in trial_keys.items():
                if not key.startswith(self.kind + "_") or param not in params:
                    raise ValueError(f"{self.kind} family {name!r}: trial key {key!r} must start with "
                                     f"{self.kind + '_'!r} and name one of its parameters {sorted(params)}")
            return Family(name, fn, params, summary, trial_keys, **facts)

        return super().register(name, make)

    def unknown(self, name) -> ParamError:
        return ParamError(registries.unknown_message(f"{self.kind} family", name, list(self), show=None),
                          family=str(name))

    def family(self, name: str) -> Family:
        """Family ``name``; an unknown one raises :class:`ParamError` listing the families."""
        return self[name]

    def trial_keys(self) -> list[str]:
        """Every trial key some family of this kind reads, in registration order."""
        return list(dict.fromkeys(key for fam in self.values() for key in fam.trial_keys))

    def trial_kwargs(self, name: str, trial: Mapping, extra: Mapping | None = None) -> dict:
        """Family ``name``'s parameters from a trial (``extra`` alone for an unknown family,
        which the caller's ``get_*`` then rejects)."""
        return self[name].kwargs(trial, extra) if name in self else dict(extra or {})

    def ignored_keys(self, name: str) -> list[str]:
        """Trial keys of this kind that family ``name`` does not read (all of them if unknown)."""
        used = self[name].trial_keys if name in self else {}
        return [key for key in self.trial_keys() if key not in used]


class ImageTransform:
    """The one ``__call__`` of artifacts and edits: ``t(images, rng) -> images``.

    ``images`` float ``(n, C, N, N)``, N even; returns float32 of the same shape clipped to
    [0, 1] (the clip is part of every transform). An identity transform returns a bit-identical
    float32 copy and draws nothing from ``rng``. Subclasses define ``is_identity`` and ``_apply``.
    """

    family: str = ""

    @property
    def is_identity(self) -> bool:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, images, rng: np.random.Generator) -> np.ndarray:
        x = check_images(images)
        if self.is_identity or len(x) == 0:
            return np.array(x, dtype=np.float32, copy=True)
        out = self._apply(x.astype(np.float32, copy=False), rng)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
