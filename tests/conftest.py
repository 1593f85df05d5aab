import os
import tempfile
from pathlib import Path

# Generated datasets are cached between test runs in one place outside the repo (keys include the
# code version, so a changed generator never reuses stale arrays). Tests that check caching itself
# point SPECTRAL_RAY_CACHE at their own tmp_path.
os.environ.setdefault("SPECTRAL_RAY_CACHE", str(Path(tempfile.gettempdir()) / "spectral-ray-test-cache"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    return REPO
