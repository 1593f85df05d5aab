"""Restricted unpickler for untrusted dataset pickles (e.g. KneeMRI's ``.pck`` volumes).

``pickle.load`` runs whatever callables a file names (``os.system``, ``builtins.eval``, …), so a
downloaded dataset could execute code. :func:`load` resolves only the globals needed to rebuild
numpy arrays, numpy scalars/dtypes and plain builtin containers; any other global raises
:class:`pickle.UnpicklingError` naming it, *before* anything is called.

Admitted globals (Python 2 names ``__builtin__``/``copy_reg`` are mapped to their Python 3 names):

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
- ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar``
- ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer`` (protocol-5 arrays)
- ``numpy.ndarray``, ``numpy.dtype``
- ``builtins`` containers and literals: set, frozenset, list, dict, tuple, bytes, bytearray,
  complex, int, float, str, bool, slice, range
- ``_codecs.encode`` restricted to the latin-1 codec (how protocol 2 stores ``bytes``)

Object arrays (dtype ``O``) are refused: their elements are arbitrary pickles.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path
from typing import IO, Any

__all__ = ["load", "loads", "RestrictedUnpickler", "ALLOWED_GLOBALS"]

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_BUILTIN_NAMES = {
    "set", "frozenset", "list", "dict", "tuple", "bytes", "bytearray",
    "complex", "int", "float", "str", "bool", "slice", "range",
}
ALLOWED_GLOBALS = frozenset(_NUMPY_GLOBALS | {("builtins", n) for n in _BUILTIN_NAMES} | {("_codecs", "encode")})

# Python 2 pickles name these modules differently.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _latin1_encode(obj, encoding="latin1", errors="strict"):
    """``_codecs.encode`` limited to what protocol 2 uses it for: str -> bytes via latin-1."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(obj).__name__}, {encoding!r}, {errors!r})")
    return obj.encode("latin1")


def _check_dtype(dtype):
    if getattr(dtype, "hasobject", False):
        raise pickle.UnpicklingError("refused numpy object array (dtype 'O'): its elements would be unpickled freely")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}': this restricted unpickler only rebuilds numpy arrays "
                "and plain containers (see spectral_ray.safe_pickle)"
            )
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module == "builtins":
            import builtins

            return getattr(builtins, name)
        import numpy as np

        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):

            def dtype(*args, **kwargs):
                dt = np.dtype(*args, **kwargs)
                _check_dtype(dt)
                return dt

            return dtype
        # numpy 2 moved numpy.core to numpy._core; resolve either spelling on either version.
        import importlib

        sub = module.split(".")[-1]
        try:
            mod = importlib.import_module(f"numpy._core.{sub}")
        except ImportError:
            mod = importlib.import_module(f"numpy.core.{sub}")
        return getattr(mod, name)

    def persistent_load(self, pid):  # pragma: no cover - nothing we read uses persistent ids
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding='latin1'`` lets Python-2 numpy pickles (8-bit ``str`` buffers) load correctly.
    """
    return _load(io.BytesIO(data), encoding)


def load(path_or_file: str | os.PathLike | IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle a file (path or binary file object) with :class:`RestrictedUnpickler`.

    Raises ``FileNotFoundError`` naming a missing path and ``pickle.UnpicklingError`` naming any
    refused global.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        path = Path(path_or_file)
        if not path.is_file():
            raise FileNotFoundError(f"pickle file not found: {path}")
        with open(path, "rb") as f:
            try:
                return _load(f, encoding)
            except pickle.UnpicklingError as e:
                raise pickle.UnpicklingError(f"{path}: {e}") from None
    return _load(path_or_file, encoding)


def _load(f: IO[bytes], encoding: str) -> Any:
    obj = RestrictedUnpickler(f, encoding=encoding).load()
    _check_arrays(obj)
    return obj


def _check_arrays(obj, depth: int = 0) -> None:
    """Refuse object arrays anywhere in the result (defence in depth; dtype() already refuses)."""
    import numpy as np

    if depth > 20:
        return
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
    elif isinstance(obj, dict):
        for v in obj.values():
            _check_arrays(v, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_arrays(v, depth + 1)
