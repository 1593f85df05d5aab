"""The medical pretraining source and the phantom/acquisition code it shares with the targets.

The targets ``ct_lesion`` and ``mri_knee`` draw on :mod:`spectral_ray.data.phantoms` too; any
change made there for the source must be opt-in, so the targets' arrays stay bit-identical.
The hashes below were recorded from the code before the acquisition was made realistic
(commit 0b1fa95). They are exact for this environment's numpy/scipy/scikit-image/torch; a
library upgrade that changes floating-point results would change them as well.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from spectral_ray.data import get_dataset

TARGET_HASHES = {  # (name, params) -> sha256[:16] of images, labels
    ("ct_lesion", (("n", 20), ("seed", 0))): ("1178a01f0b498006", "2d955b43c8ff6932"),
    ("ct_lesion", (("n", 20), ("seed", 1), ("size", 32))): ("25bda1f61d2efef3", "7ceda1032c71fccf"),
    ("mri_knee", (("n", 20), ("seed", 0))): ("a14f51cfd390bec3", "2d955b43c8ff6932"),
    ("mri_knee", (("n", 20), ("seed", 1), ("size", 32))): ("fc8182b51fb92dde", "7ceda1032c71fccf"),
}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name,params", list(TARGET_HASHES), ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}{x}" for k, x in v))
def test_target_arrays_bit_identical(name, params):
    ds = get_dataset(name, use_cache=False, progress=False, **dict(params))
    assert (_sha(ds.images), _sha(ds.labels)) == TARGET_HASHES[name, params]
