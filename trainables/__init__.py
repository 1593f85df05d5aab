"""Ray Tune glue: thin function trainables over :mod:`spectral_ray.experiment`, and the launcher
that turns a sweep file into a ``tune.Tuner``. The trainable called NAME is the function NAME in
``trainables/NAME.py``; the names are ``spectral_ray.config.TRAINABLES``."""

import importlib

from spectral_ray.config import TRAINABLES
from spectral_ray.registries import unknown_message


def get_trainable(name: str):
    """The function trainable called ``name`` (imports Ray). With ``$SPECTRAL_RAY_TEST_FAIL_ONCE``
    set (tests), wrapped so that each trial's first attempt fails (trainables/faults.py)."""
    if name not in TRAINABLES:
        raise ValueError(unknown_message("trainable", name, list(TRAINABLES)))
    fn = getattr(importlib.import_module(f"trainables.{name}"), name)
    from trainables import faults

    return faults.wrap(fn)
