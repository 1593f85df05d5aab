"""Artifacts: signatures, spectral effects, ranges, determinism."""

import numpy as np
import pytest

from spectral_ray.artifacts import get_artifact, list_artifacts, reference_images
from spectral_ray.spectrum import radial_psd

N = 64
K = N // 2


@pytest.fixture(scope="module")
def images():
    """1/f² test images (a different draw than the signature's reference set)."""
    return reference_images(N, 24, seed=7).copy()


def _psd(x):
    return radial_psd(x[:, 0].astype(np.float64)).mean(0)


@pytest.mark.parametrize("omega", [0.1, 0.25, 0.5, 0.8, 1.0])
def test_band_signature_concentrated_at_omega(omega):
    sig = get_artifact("band", omega=omega, amplitude=0.2, bandwidth=0.05).signature(N)
    assert sig.shape == (N // 2 + 1,)
    assert sig.sum() == pytest.approx(1.0)
    k = round(omega * K)
    assert sig[max(0, k - 2) : k + 3].sum() >= 0.8
    assert int(np.argmax(sig)) == k


def test_band_amplitude_relative_to_image_std(images):
    rng = np.random.default_rng(0)
    x = np.clip(0.5 + 0.5 * (images - 0.5), 0, 1)  # halve the std, stay clear of the clip
    d = get_artifact("band", omega=0.5, amplitude=0.1)(x, rng) - x
    ratio = d.reshape(len(x), -1).std(1) / x.reshape(len(x), -1).std(1)
    np.testing.assert_allclose(ratio, 0.1, rtol=0.05)


def test_photon_noise_raises_high_frequency_power(images):
    for mode in ("image", "sinogram"):
        art = get_artifact("photon_noise", mode=mode)
        y = art(images, np.random.default_rng(0))
        p0, p1 = _psd(images), _psd(y)
        hi = slice(2 * K // 3, None)  # top third of the band
        assert p1[hi].sum() > 1.02 * p0[hi].sum(), mode
        assert np.abs(y - images).mean() > 1e-3, mode


@pytest.mark.parametrize("family,params", [("nlm", {"h": 0.05}), ("lowpass", {}), ("lowpass", {"kind": "ideal", "omega": 0.3})])
def test_denoisers_lower_high_frequency_power(images, family, params):
    y = get_artifact(family, **params)(images, np.random.default_rng(0))
    p0, p1 = _psd(images), _psd(y)
    hi = slice(2 * K // 3, None)
    assert p1[hi].sum() < 0.7 * p0[hi].sum()
    # and leave the lowest frequencies nearly alone
    assert p1[1:4].sum() == pytest.approx(p0[1:4].sum(), rel=0.1)


def test_lowpass_ideal_removes_everything_above_cutoff(images):
    y = get_artifact("lowpass", kind="ideal", omega=0.25)(np.clip(0.5 + 0.3 * (images - 0.5), 0, 1), None)
    assert _psd(y)[K // 4 + 1 :].max() < 1e-6 * _psd(y)[1]


@pytest.mark.parametrize("family", ["band", "photon_noise", "nlm", "lowpass", "none"])
def test_shape_range_determinism(images, family):
    art = get_artifact(family)
    x3 = np.repeat(images[:4], 3, axis=1)  # 3-channel input too
    for x in (images[:6], x3):
        a = art(x, np.random.default_rng(3))
        b = art(x, np.random.default_rng(3))
        assert a.shape == x.shape and a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 1.0
        np.testing.assert_array_equal(a, b)
    if family == "none":
        np.testing.assert_array_equal(art(images, None), images)
        assert not art.signature(N).any()
    else:
        sig = art.signature(N)
        assert sig.shape == (N // 2 + 1,) and sig.sum() == pytest.approx(1.0) and (sig >= 0).all()


def test_signature_is_reproducible_and_does_not_alias():
    art = get_artifact("band", omega=0.3)
    s = art.signature(32)
    s[:] = 0
    assert art.signature(32).sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(art.signature(32), get_artifact("band", omega=0.3).signature(32))


def test_list_and_params():
    assert set(list_artifacts()) >= {"none", "band", "photon_noise", "nlm", "lowpass"}
    art = get_artifact("lowpass", omega=0.3)
    assert art.family == "lowpass" and art.params["omega"] == 0.3 and art.params["kind"] == "butterworth"


@pytest.mark.parametrize(
    "family,params,name",
    [
        ("band", {"omega": 0.0}, "omega"),
        ("band", {"omega": 1.5}, "omega"),
        ("band", {"amplitude": -0.1}, "amplitude"),
        ("band", {"bandwidth": 0}, "bandwidth"),
        ("band", {"freq": 0.3}, "freq"),
        ("photon_noise", {"n0": 0}, "n0"),
        ("photon_noise", {"mode": "kspace"}, "mode"),
        ("nlm", {"h": 0}, "h"),
        ("nlm", {"patch_size": 2.5}, "patch_size"),
        ("lowpass", {"kind": "gaussian"}, "kind"),
        ("lowpass", {"order": 0}, "order"),
    ],
)
def test_bad_parameters_name_themselves(family, params, name):
    with pytest.raises(ValueError, match=name):
        get_artifact(family, **params)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown artifact family"):
        get_artifact("jpeg")
