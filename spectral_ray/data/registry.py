"""Dataset registry: one name per dataset, and with it everything known about it — its builder,
kind, cache policy, the code its arrays depend on (hashed into every cache key and backbone key)
and which of its parameters are paths (checked by sweep validation)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from spectral_ray.data import cache
from spectral_ray.data.codeversion import CodeNotFound, hash_modules, module_closure
from spectral_ray.data.dataset import ImageDataset
from spectral_ray.registries import Registry

__all__ = [
    "ImageDataset",
    "register_dataset",
    "get_dataset",
    "list_datasets",
    "dataset_info",
    "code_version",
    "missing_paths",
    "EDIT_MODULE",
]

# The module whose code (with its imports) edits a source; part of an edited source's code version.
EDIT_MODULE = "spectral_ray.editing"
KINDS = ("source", "target")


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., ImageDataset]
    kind: str  # "source" or "target"
    cached: bool
    description: str
    code: tuple  # ((module, file), ...) whose source decides the arrays
    paths: tuple[str, ...]  # required path parameters
    optional_paths: tuple[str, ...]
    check: Callable[[dict], list[str]] | None = None  # further problems with a trial's params, e.g. files a default path needs


# A builder module imported again (a test's, a worker's) registers its name again: replaced.
_REGISTRY: Registry[_Entry] = Registry("dataset", replace=True)


def _builder_code(name: str, builder: Callable, extra: Sequence[str]) -> tuple:
    """The builder's module closure plus the closures of ``extra`` modules, each file once."""
    module = builder.__module__
    try:
        src = inspect.getsourcefile(builder)
    except TypeError:
        src = None
    try:
        found = dict(module_closure(module, Path(src) if src else None))
        for m in extra:
            for k, v in module_closure(m):
                found.setdefault(k, v)
    except CodeNotFound as e:
        raise CodeNotFound(
            f"dataset {name!r}: {e}; its cache and the backbones pretrained on it need a code version. "
            "Define the builder in an importable module, or name the modules whose code decides its "
            "arrays with register_dataset(..., code=[...])"
        ) from None
    return tuple(found.items())


def _check_params(name: str, builder: Callable, names: Sequence[str], what: str) -> tuple[str, ...]:
    params = inspect.signature(builder).parameters
    bad = [p for p in names if p not in params]
    if bad:
        raise ValueError(f"dataset {name!r}: {what} {bad} are not parameters of {builder.__name__}; "
                         f"its parameters: {list(params)}")
    return tuple(names)


def register_dataset(
    name: str,
    *,
    kind: str,
    cached: bool = True,
    code: Sequence[str] = (),
    paths: Sequence[str] = (),
    optional_paths: Sequence[str] = (),
    check: Callable[[dict], list[str]] | None = None,
):
    """Decorator: register ``builder(**params) -> ImageDataset`` under ``name``.

    ``kind`` is ``"source"`` (pretraining, multi-class) or ``"target"`` (binary, with groups).
    Cached builders are pure functions of their parameters; their arrays are stored on disk under
    a key that includes :func:`code_version` — the builder's module and the project modules it
    imports (:mod:`spectral_ray.data.codeversion`), plus the modules named in ``code`` (for code
    reached otherwise, e.g. imported inside a function). A builder whose source cannot be found
    is refused here. ``paths`` / ``optional_paths`` name the parameters that are paths on disk
    (required / optional), for :func:`missing_paths`; ``check(params)`` adds its own messages
    there (e.g. the files an unset path parameter defaults to, with how to get them).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if isinstance(code, str) or isinstance(paths, str) or isinstance(optional_paths, str):
        raise TypeError(f"dataset {name!r}: code, paths and optional_paths are lists of names, not one string")

    def make(builder) -> _Entry:
        doc = inspect.getdoc(builder) or ""
        return _Entry(
            builder=builder,
            kind=kind,
            cached=cached,
            description=doc.splitlines()[0] if doc else "",
            code=_builder_code(name, builder, code),
            paths=_check_params(name, builder, paths, "paths"),
            optional_paths=_check_params(name, builder, optional_paths, "optional_paths"),
            check=check,
        )

    def wrap(builder):
        _REGISTRY.register(name, make)(builder)
        code_version.cache_clear()
        return builder

    return wrap


def _entry(name: str) -> _Entry:
    """Dataset ``name``'s entry; an unknown name raises a ValueError listing the datasets."""
    return _REGISTRY[name]


def list_datasets(kind: str | None = None) -> list[str]:
    """Registered dataset names, optionally only ``"source"`` or ``"target"`` ones."""
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


@lru_cache(maxsize=128)
def code_version(name: str, *, edited: bool = False) -> str:
    """``CODE_VERSION-<hash>`` of the code that decides dataset ``name``'s arrays (``edited``: and
    the code that edits it, :data:`EDIT_MODULE` with its imports), so that changing a generator
    never lets an old cache — or a backbone pretrained on old data — be reused, while unrelated
    changes keep both. Read once per process."""
    modules = dict(_entry(name).code)
    if edited:
        for k, v in module_closure(EDIT_MODULE):
            modules.setdefault(k, v)
    return hash_modules(tuple(modules.items()), cache.CODE_VERSION)


def load_or_build(name: str, params: dict, build: Callable[[], ImageDataset], *, edited: bool = False) -> ImageDataset:
    """:func:`spectral_ray.data.cache.load_or_build` under dataset ``name``'s code version; an
    ``edited`` dataset is filed as ``NAME+edit`` and versioned with the editing code too."""
    return cache.load_or_build(f"{name}+edit" if edited else name, params, build,
                               code=code_version(name, edited=edited))


def dataset_info(name: str) -> dict:
    """Kind, cache policy, description, path parameters and the builder's default parameters."""
    e = _entry(name)
    defaults = {
        k: p.default
        for k, p in inspect.signature(e.builder).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {"name": name, "kind": e.kind, "cached": e.cached, "description": e.description, "defaults": defaults,
            "paths": list(e.paths), "optional_paths": list(e.optional_paths)}


def missing_paths(name: str, params: dict) -> list[str]:
    """Problems with the path parameters of dataset ``name`` (empty when all are present, or when
    ``name`` is not registered — unknown names are reported by the config schema).

    One message per required path parameter that is unset and per given path that does not
    exist, e.g. ``"lodopab_ct: labels_csv not found: /data/lodopab/labels.csv"``. For sweep
    validation: it checks existence only, it reads nothing."""
    e = _REGISTRY.get(name)
    if e is None:
        return []
    out = []
    for param in e.paths + e.optional_paths:
        value = params.get(param)
        if value in (None, ""):
            if param in e.paths:
                out.append(f"{name}: parameter '{param}' is required (a path); see docs/REAL_DATA.md")
            continue
        p = Path(value).expanduser()
        if not p.exists():
            out.append(f"{name}: {param} not found: {p}")
    if e.check is not None:
        out += e.check(params)
    return out


def get_dataset(name: str, *, use_cache: bool = True, progress: bool = True, **params) -> ImageDataset:
    """Build (or load from the cache) dataset ``name`` with ``params`` (size, channels, n, seed, …).

    Unknown parameters raise ``TypeError`` naming them; the same parameters always give identical
    arrays.
    """
    e = _entry(name)
    sig = inspect.signature(e.builder)
    accepts_progress = "progress" in sig.parameters
    unknown = sorted(set(params) - set(sig.parameters))
    if unknown:
        allowed = sorted(set(sig.parameters) - {"progress"})
        raise TypeError(f"dataset {name!r} got unknown parameter(s) {unknown}; allowed: {allowed}")
    full = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    full.pop("progress", None)
    full.update(params)

    def build() -> ImageDataset:
        ds = e.builder(**full, **({"progress": progress} if accepts_progress else {}))
        ds.name, ds.params = name, dict(full)
        return ds

    if not (e.cached and use_cache):
        return build()
    return load_or_build(name, full, build)
