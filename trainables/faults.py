"""Failure injection for the fault-tolerance tests, on the Ray side of the trainables (the
library knows nothing of it): with ``$SPECTRAL_RAY_TEST_FAIL_ONCE`` set to a folder when the
sweep starts, the first attempt of each trial config raises and leaves a marker there, so that
its retry runs normally. Without the variable the trainable is returned as it is."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

FAIL_ONCE_ENV = "SPECTRAL_RAY_TEST_FAIL_ONCE"


def wrap(fn):
    folder = os.environ.get(FAIL_ONCE_ENV)
    if not folder:
        return fn

    @functools.wraps(fn)
    def fail_once(config: dict, **kwargs):
        marker = Path(folder) / hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure ({FAIL_ONCE_ENV} test hook); the retry will pass")
        return fn(config, **kwargs)

    return fail_once
