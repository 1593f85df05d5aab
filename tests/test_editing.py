"""Source data editing: identity at strength 0, band gain, blends, inoculation, cached registry path."""

import time

import numpy as np
import pytest

from spectral_ray.artifacts import reference_images
from spectral_ray.data import registry
from spectral_ray.data.registry import ImageDataset
from spectral_ray.editing import edit_dataset, get_edit, get_edited_dataset, list_edits
from spectral_ray.spectrum import radial_psd

N = 32
K = N // 2


@pytest.fixture(scope="module")
def images():
    x = reference_images(N, 20, seed=3).copy()
    return np.clip(0.5 + 0.6 * (x - 0.5), 0, 1)  # std ≈ 0.09: room for gains before the clip


def _psd(x):
    return radial_psd(x[:, 0].astype(np.float64)).mean(0)


@pytest.mark.parametrize(
    "family,params",
    [("band_gain", {"omega": 0.5}), ("blend_lowpass", {}), ("blend_highpass", {}), ("inoculate", {"artifact": "band"}), ("none", {})],
)
def test_strength_zero_is_bit_identical(images, family, params):
    e = get_edit(family, 0.0, **params)
    out = e(images, np.random.default_rng(0))
    assert out is not images
    np.testing.assert_array_equal(out, images)
    assert out.dtype == images.dtype


@pytest.mark.parametrize("omega", [0.25, 0.5, 0.75])
def test_band_gain_moves_power_at_omega(images, omega):
    k = round(omega * K)
    p0 = _psd(images)
    up = _psd(get_edit("band_gain", 1.0, omega=omega, bandwidth=0.1)(images, None))
    down = _psd(get_edit("band_gain", -0.8, omega=omega, bandwidth=0.1)(images, None))
    assert up[k] > 3.0 * p0[k]  # (1 + 1)² = 4 at the centre, minus the clip
    assert down[k] < 0.1 * p0[k]  # (1 − 0.8)² = 0.04
    far = 1 if omega >= 0.5 else K - 2  # well outside the band
    assert up[far] == pytest.approx(p0[far], rel=0.05)


def test_blends_move_power_the_right_way(images):
    p0 = _psd(images)
    lo = _psd(get_edit("blend_lowpass", 1.0, omega=0.25)(images, None))
    hi = _psd(get_edit("blend_highpass", 1.0, omega=0.25)(images, None))
    half = _psd(get_edit("blend_lowpass", 0.5, omega=0.25)(images, None))
    top = slice(2 * K // 3, None)
    assert lo[top].sum() < 0.05 * p0[top].sum()
    assert p0[top].sum() > half[top].sum() > lo[top].sum()
    assert hi[1:3].sum() < 0.3 * p0[1:3].sum()
    assert hi[top].sum() == pytest.approx(p0[top].sum(), rel=0.05)


def test_inoculate_probability_and_label_independence(images):
    x = np.repeat(images, 10, axis=0)  # 200 images
    e = get_edit("inoculate", 0.3, artifact="band", omega=0.5, amplitude=0.5)
    out = e(x, np.random.default_rng(1))
    hit = np.abs(out - x).reshape(len(x), -1).max(1) > 0
    assert 0.18 < hit.mean() < 0.42
    np.testing.assert_array_equal(get_edit("inoculate", 1.0, artifact="lowpass")(x[:5], np.random.default_rng(0)).shape, x[:5].shape)
    assert get_edit("inoculate", 0.5, artifact="nlm", h=0.1).params == {
        "artifact": "nlm",
        "artifact_params": {"h": 0.1, "patch_size": 5, "patch_distance": 6},
    }


def test_same_seed_same_arrays_and_range(images):
    ds = ImageDataset(images, np.arange(len(images)) % 3, ["a", "b", "c"], name="t", params={"n": 20})
    e = get_edit("inoculate", 0.5, artifact="band", amplitude=2.0)
    a, b, c = edit_dataset(ds, e, 7), edit_dataset(ds, e, 7), edit_dataset(ds, e, 8)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.min() >= 0 and a.images.max() <= 1 and a.images.dtype == np.float32
    np.testing.assert_array_equal(a.labels, ds.labels)
    assert a.params["edit"]["family"] == "inoculate" and a.params["n"] == 20
    out = get_edit("band_gain", 10.0, omega=0.3)(images, None)  # a huge gain is clipped
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "family,strength,params,name",
    [
        ("band_gain", -1.5, {}, "strength"),
        ("band_gain", 0.5, {"omega": 1.2}, "omega"),
        ("band_gain", 0.5, {"bandwidth": 0.0}, "bandwidth"),
        ("blend_lowpass", 1.5, {}, "strength"),
        ("blend_highpass", 0.5, {"cutoff": 0.2}, "cutoff"),
        ("inoculate", -0.1, {}, "strength"),
        ("inoculate", 0.5, {"artifact": "band", "omega": 2.0}, "omega"),
        ("inoculate", 0.5, {"artifact": "jpeg"}, "jpeg"),
        ("sharpen", 0.5, {}, "sharpen"),
    ],
)
def test_bad_parameters_name_themselves(family, strength, params, name):
    with pytest.raises(ValueError, match=name):
        get_edit(family, strength, **params)


def test_list_edits():
    assert set(list_edits()) >= {"band_gain", "blend_lowpass", "blend_highpass", "inoculate"}


def test_get_edited_dataset_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path))
    calls = []

    def build(size=N, n=30, seed=0):
        """tiny test source"""
        calls.append(seed)
        x = reference_images(size, n, seed=seed + 100).copy()
        return ImageDataset(x, np.arange(n, dtype=np.int64) % 2, ["a", "b"])

    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy())  # registered for this test only
    registry.register_dataset("_edit_test_src", kind="source")(build)
    kw = dict(edit_params={"omega": 0.5, "bandwidth": 0.2}, seed=3, n=30)
    a = get_edited_dataset("_edit_test_src", "band_gain", 0.7, **kw)
    files = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert len(files) == 2 and any(f.startswith("_edit_test_src+edit") for f in files)
    t = time.perf_counter()
    b = get_edited_dataset("_edit_test_src", "band_gain", 0.7, **kw)
    assert time.perf_counter() - t < 1.0
    assert calls == [0]  # the source was built once, the edit once
    np.testing.assert_array_equal(a.images, b.images)
    base = get_edited_dataset("_edit_test_src", "band_gain", 0.0, **kw)
    assert not np.array_equal(a.images, base.images)
    np.testing.assert_array_equal(a.labels, base.labels)
    other = get_edited_dataset("_edit_test_src", "band_gain", 0.7, edit_params={"omega": 0.25}, seed=3, n=30)
    assert not np.array_equal(a.images, other.images)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert b.params["edit"] == {"family": "band_gain", "strength": 0.7, "params": {"omega": 0.5, "bandwidth": 0.2}, "seed": 3}
    # the dataset's own seed travels as dataset_seed (seed is the edit's)
    d1 = get_edited_dataset("_edit_test_src", "band_gain", 0.7, **kw, dataset_seed=1)
    assert calls == [0, 1] and d1.params["seed"] == 1 and b.params["seed"] == 0
    assert not np.array_equal(d1.images, a.images)


def test_is_edit_is_the_one_rule_negative_strengths_included():
    import pandas as pd

    from analysis.aggregate import edit_label, is_edited
    from spectral_ray.config import normalize_trial
    from spectral_ray.editing import get_edit, is_edit
    from spectral_ray.store import PretrainConfig

    assert is_edit("band_gain", -0.5) and is_edit("band_gain", 2.0)
    assert not is_edit("band_gain", 0) and not is_edit("none", 1.0) and not is_edit(None, 1.0)
    assert not is_edit(float("nan"), 1.0) and not is_edit("band_gain", float("nan"))
    # every place that asks agrees: the edit itself, the schema's normalisation, the store, analysis
    assert not get_edit("band_gain", -0.5).is_identity and get_edit("band_gain", 0).is_identity
    assert normalize_trial({"edit": "band_gain", "edit_strength": -0.5})["edit"] == "band_gain"
    assert normalize_trial({"edit": "band_gain", "edit_strength": 0})["edit"] == "none"
    assert PretrainConfig(source="natural", edit_family="band_gain", edit_strength=-0.5).edited
    t = pd.DataFrame({"edit": ["band_gain", "band_gain", "none"], "edit_strength": [-0.5, 0.0, 1.0]})
    assert is_edited(t).tolist() == [True, False, False]
    assert edit_label(t).tolist() == ["band_gain s=-0.5", "unedited", "unedited"]


def test_band_gain_is_bit_identical_to_before_the_registry():
    """Digests of the pre-registry code (commit 0b1fa95) on this project's numpy; see
    tests/test_artifacts.py's BAND_DIGESTS for the caveat."""
    import hashlib

    x = reference_images(32, 6, seed=3).copy()

    def digest(a):
        return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()[:16]

    assert digest(get_edit("band_gain", 1.0, omega=0.5)(x, np.random.default_rng(2))) == "3aa66674d4bf0845"
    assert digest(get_edit("band_gain", -0.5, omega=0.3)(x, np.random.default_rng(2))) == "252b4823e0478b4b"


def test_edit_registry_declares_strength_params_and_trial_keys():
    from spectral_ray.config import TrialConfig
    from spectral_ray.editing import EDITS
    from spectral_ray.families import ImageTransform, ParamError

    assert isinstance(get_edit("band_gain", 1.0), ImageTransform)
    for name, fam in EDITS.items():
        assert fam.strength is not None and fam.summary
        assert all(key in TrialConfig.model_fields and p in fam.params for key, p in fam.trial_keys.items())
    assert {n for n, f in EDITS.items() if "edit_omega" in f.trial_keys} == {"band_gain", "blend_lowpass", "blend_highpass"}
    assert EDITS.ignored_keys("inoculate") == ["edit_omega"]
    with pytest.raises(ParamError) as e:
        get_edit("band_gain", 20.0)
    assert e.value.param == "strength" and e.value.family == "band_gain"
    with pytest.raises(ParamError) as e:
        get_edit("inoculate", 0.5, artifact="band", omega=2.0)
    assert (e.value.family, e.value.param) == ("band", "omega")
