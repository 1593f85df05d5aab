"""The one registration idiom of the project: a :class:`Registry` of named entries, filled by a
decorator where each thing is defined (timm's ``register_model`` in one class).

::

    FIGURES = Registry("figure")

    @FIGURES.register("priorities")
    def fig_priorities(trials, out_dir): ...

    FIGURES["priorities"]   # the function; an unknown name raises UnknownName, listing the names
    list(FIGURES)           # names in registration order

``register(name, make)`` stores ``make(obj)`` (default: ``obj`` itself) and returns ``obj``
unchanged, so the decorated function stays a plain function. A name registered twice is refused
unless the registry was made with ``replace=True`` (datasets: a builder module may be imported
again, e.g. by a test or a worker) or the call says ``replace=True``. Users: datasets
(:mod:`spectral_ray.data.registry`), artifact and edit families (:mod:`spectral_ray.families`),
the findings and the report's figures (``analysis/``). docs/ARCHITECTURE.md ("Registries") says
which named things are not registered this way, and why.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator, Mapping, Sequence
from typing import Callable, Generic, TypeVar

__all__ = ["Registry", "UnknownName", "unknown_message"]

T = TypeVar("T")
F = TypeVar("F")


def unknown_message(what: str, name, allowed: Sequence[str], *, show: int | None = 20) -> str:
    """The one wording of an unknown-name error: ``unknown WHAT 'NAME'.``, up to three close
    matches (``Did you mean 'x'?``) and the first ``show`` allowed names (all with ``None``; none
    with ``0``, for a list too long to print, such as timm's models)."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(name), allowed, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    if show == 0:
        return f"unknown {what} {name!r}.{hint}"
    show = len(allowed) if show is None else show
    more = " …" if len(allowed) > show else ""
    return f"unknown {what} {name!r}.{hint} Allowed: {', '.join(map(repr, allowed[:show])) or 'none'}{more}."


class UnknownName(KeyError, ValueError):
    """A name no entry of the registry has: a ``ValueError`` (bad input) and, as for a dict, a
    ``KeyError``. ``noun`` is what the registry holds, ``name`` the name asked for, ``allowed``
    the registered names in registration order."""

    def __init__(self, noun: str, name, allowed: list[str]):
        self.noun, self.name, self.allowed = noun, name, list(allowed)
        self.message = unknown_message(noun, name, self.allowed, show=None)
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Registry(Mapping, Generic[T]):
    """name -> entry for one kind of thing (``noun``: "dataset", "finding", …), registration
    order kept. Read it as a mapping; fill it only through :meth:`register` / :meth:`add`."""

    def __init__(self, noun: str, *, replace: bool = False):
        self.noun = noun
        self.replace = replace  # the registry's policy for a name registered again
        self._entries: dict[str, T] = {}

    def register(self, name: str, make: Callable[[F], T] | None = None, *,
                 replace: bool | None = None) -> Callable[[F], F]:
        """Decorator: register ``make(obj)`` (or ``obj``) as ``name``; returns ``obj`` itself.
        The duplicate check comes before ``make`` runs, and nothing is stored if it raises."""

        def add(obj: F) -> F:
            self._check_new(name, replace)
            self.add(name, make(obj) if make is not None else obj, replace=True)
            return obj

        return add

    def add(self, name: str, entry: T, *, replace: bool | None = None) -> T:
        """Store ``entry`` under ``name`` (refused for a registered name unless replacing)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.noun}'s name must be a non-empty string, got {name!r}")
        self._check_new(name, replace)
        self._entries[name] = entry
        return entry

    def _check_new(self, name: str, replace: bool | None) -> None:
        if name in self._entries and not (self.replace if replace is None else replace):
            raise ValueError(f"{self.noun} {name!r} is registered twice")

    def unknown(self, name) -> Exception:
        """The error for a name that is not registered (a subclass may give its own)."""
        return UnknownName(self.noun, name, list(self._entries))

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise self.unknown(name) from None

    def __contains__(self, name) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def get(self, name, default=None):
        return self._entries.get(name, default) if name in self else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def copy(self) -> Registry[T]:
        """A registry of the same class and policy with the same entries, filled on its own
        afterwards (a test's scratch registry)."""
        new = copy.copy(self)
        new._entries = dict(self._entries)
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.noun!r}: {', '.join(self._entries)})"
