"""The code a dataset's arrays depend on, found from its builder's imports, and its hash.

A builder's *code* is its own module plus every module of the same project it imports at module
level, transitively (import statements are read from the source with :mod:`ast`, nothing is
imported). The registry machinery itself (:data:`INFRASTRUCTURE`) decides no arrays and is left
out, so editing the registry or the cache does not invalidate every cached dataset and backbone.
An import inside a function is not followed: put an import whose code decides the arrays at
module level, or name its module in ``register_dataset(..., code=[...])``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["INFRASTRUCTURE", "CodeNotFound", "module_closure", "hash_modules", "source_of"]

PROJECT = "spectral_ray"
# Modules that store, look up or describe datasets without deciding their contents.
INFRASTRUCTURE = frozenset({
    "spectral_ray.data",
    "spectral_ray.data.registry",
    "spectral_ray.data.cache",
    "spectral_ray.data.codeversion",
    "spectral_ray.data.dataset",
    "spectral_ray.atomic",
    "spectral_ray.paths",
    "spectral_ray.registries",
})


class CodeNotFound(ValueError):
    """A dataset's code cannot be located, so no code version can be given to its cache."""


@lru_cache(maxsize=None)
def _package_dir(top: str) -> tuple[Path | None, Path | None]:
    """(package folder, plain-module file) of a top-level name; finds without importing."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # e.g. ``__main__``, which has no spec
        spec = None
    if spec is None:
        return None, None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]), None
    return None, Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None


def source_of(module: str) -> Path | None:
    """The ``.py`` file of ``module`` (a package's ``__init__.py``), or None when not found."""
    top, *rest = module.split(".")
    folder, plain = _package_dir(top)
    if folder is None:
        return plain if not rest else None
    base = folder.joinpath(*rest)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _is_package(module: str) -> bool:
    p = source_of(module)
    return p is not None and p.name == "__init__.py"


def _imported(module: str, path: Path) -> list[str]:
    """Modules named by the module-level import statements of ``path``, in order."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if _is_package(module) else module.rpartition(".")[0]
    out: list[str] = []
    for node in _module_level(tree.body):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            for a in node.names:  # `from pkg import sub` names the submodule, not pkg's __init__
                sub = f"{base}.{a.name}"
                out.append(sub if source_of(sub) is not None else base)
    return out


def _module_level(body: Iterable[ast.stmt]):
    """Statements run on import: the body, and the branches of module-level if/try blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_level(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


@lru_cache(maxsize=None)
def module_closure(module: str, path: Path | None = None) -> tuple[tuple[str, Path], ...]:
    """``(name, file)`` of ``module`` and of the project modules it imports at module level,
    transitively: depth-first, in import-statement order, each once. Followed: modules of
    ``spectral_ray`` and of ``module``'s own top-level package; :data:`INFRASTRUCTURE` is skipped.
    ``path`` gives ``module``'s file where it cannot be found by name (a script's ``__main__``).

    Raises :class:`CodeNotFound` when ``module``'s source file cannot be found."""
    root = path or source_of(module)
    if root is None:
        raise CodeNotFound(f"cannot find the source file of module {module!r}")
    tops = {PROJECT, module.split(".")[0]}
    seen: dict[str, Path] = {}

    def visit(name: str, file: Path | None) -> None:
        if name in seen or name in INFRASTRUCTURE or name.split(".")[0] not in tops:
            return
        if file is None:
            return  # a name inside a module (resolved to that module) or an optional import
        seen[name] = file
        for dep in _imported(name, file):
            visit(dep, source_of(dep))

    visit(module, Path(root))
    return tuple(seen.items())


def _label(module: str, path: Path) -> str:
    """How a file enters the hash: its path below the ``spectral_ray`` folder (``data/natural.py``),
    or the module name for code outside the project."""
    folder, _ = _package_dir(PROJECT)
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return module


def hash_modules(modules: Sequence[tuple[str, Path]], prefix: str) -> str:
    """``prefix-<12 hex>``: sha256 of ``prefix`` and each module's label and source bytes, in order."""
    h = hashlib.sha256(prefix.encode())
    for name, path in modules:
        h.update(_label(name, path).encode() + Path(path).read_bytes())
    return f"{prefix}-{h.hexdigest()[:12]}"
