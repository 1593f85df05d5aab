"""Where spectral-ray keeps what it generates: one cache root for the dataset cache and the
backbone store, each overridable by its own environment variable."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "cache_path"]


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/spectral-ray``, or ``~/.cache/spectral-ray`` when the variable is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spectral-ray"


def cache_path(env_var: str, *parts: str) -> Path:
    """``$env_var`` (``~`` expanded) when it is set and non-empty, else ``cache_root()/parts``."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser()
    return cache_root().joinpath(*parts)
