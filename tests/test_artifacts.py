"""Artifacts: signatures, spectral effects, the lab's photon noise, ranges, determinism, the registry."""

import hashlib

import numpy as np
import pytest

from spectral_ray.artifacts import FAMILIES, get_artifact, list_artifacts, reference_images
from spectral_ray.families import ParamError, Registry
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


# ---- the lab's include_noise.py (DovileDo/source-matters), transcribed: its noise() with the
# chest14 constants, the two RandomStates replaced by one generator the test passes in.


def _lab_noise(img, PHOTONS_PER_PIXEL, r_quantize, r_poisson):
    MU_WATER = 0.1837
    MU_AIR = 0.1662
    DISP_WINDOW = [-1200, 800]

    # add quantization noise
    img += r_quantize.uniform(0.0, 1.0, size=img.shape)

    # convert to attenuation ratio
    img = img / 255.0 * (DISP_WINDOW[1] - DISP_WINDOW[0]) + DISP_WINDOW[0]
    img = img * (MU_WATER - MU_AIR) / 1000 + MU_WATER

    # add Poisson noise
    proj_data = np.exp(-img) * PHOTONS_PER_PIXEL  # mu
    proj_data = r_poisson.poisson(proj_data) / PHOTONS_PER_PIXEL
    proj_data = np.maximum(1e-8, proj_data)
    proj_data = -np.log(proj_data)

    # rescale to HU
    recon_img = 1000 * (proj_data - MU_WATER) / (MU_WATER - MU_AIR)
    recon_img = np.clip(recon_img, DISP_WINDOW[0], DISP_WINDOW[1])
    recon_img = (recon_img - DISP_WINDOW[0]) / (DISP_WINDOW[1] - DISP_WINDOW[0]) * 255.0
    recon_img = recon_img.astype(np.uint8)

    return recon_img


@pytest.mark.parametrize("photons", [2e7, 1.5e7, 3e3])
def test_photon_noise_is_the_labs_function(images, photons):
    """Same input, same random draws: the lab's uint8 output, /255. 3·10³ photons reaches the
    window clip and the 10⁻⁸ floor; the input includes 0, 1 and 8-bit values."""
    x = images[:6].copy()
    x[0, 0, :4] = 0.0
    x[0, 0, 4:8] = 1.0
    x[1] = np.round(x[1] * 255) / 255
    art = get_artifact("photon_noise", photons_per_pixel=photons)
    ours = art(x, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    lab = _lab_noise(x.astype(np.float64) * 255.0, photons, rng, rng)
    np.testing.assert_array_equal(ours, (lab / 255.0).astype(np.float32))
    assert art.baseline.params["photons_per_pixel"] == 2e7


def test_photon_noise_std_at_mid_grey_is_the_labs():
    """Known answer: noise std at mid-grey (HU 0) 0.0072 at the baseline dose 2·10⁷, 0.0082 at the
    artifact's 1.5·10⁷ (+14 %), ± 5 %."""
    x = np.full((16, 1, 64, 64), 0.5, np.float32)
    art = get_artifact("photon_noise")
    baseline_std = (art.baseline(x, np.random.default_rng(0)) - x).std()
    artifact_std = (art(x, np.random.default_rng(1)) - x).std()
    assert baseline_std == pytest.approx(0.0072, rel=0.05)
    assert artifact_std == pytest.approx(0.0082, rel=0.05)
    assert abs((art(x, np.random.default_rng(1)) - x).mean()) < 2e-4  # dither + truncation: unbiased


def test_photon_noise_baseline_semantics():
    art = get_artifact("photon_noise", photons_per_pixel=1e5, baseline_photons_per_pixel=4e5)
    assert art.baseline == get_artifact("photon_noise", photons_per_pixel=4e5, baseline_photons_per_pixel=4e5)
    assert get_artifact("photon_noise", baseline_photons_per_pixel=None).baseline is None
    for family in ("none", "band", "nlm", "lowpass"):
        assert get_artifact(family).baseline is None


def test_photon_noise_sinogram_mode(images):
    """Poisson noise on the rays, FBP'd: noise rises with frequency (ramp filter), where the image
    mode's is white; a lower dose is noisier, and the baseline is the same transform at its dose."""
    x = np.full((8, 1, 32, 32), 0.5, np.float32)
    sino = get_artifact("photon_noise", mode="sinogram", photons_per_pixel=4e6, baseline_photons_per_pixel=1.6e7)
    image = get_artifact("photon_noise", photons_per_pixel=4e5)
    d_sino = sino(x, np.random.default_rng(0)).astype(np.float64) - x
    d_base = sino.baseline(x, np.random.default_rng(0)).astype(np.float64) - x
    d_image = image(x, np.random.default_rng(0)).astype(np.float64) - x
    p_sino, p_image = _psd(d_sino), _psd(d_image)
    assert p_sino[8:16].mean() > 1.8 * p_sino[1:4].mean()  # measured ≈ 2.4
    assert p_image[8:16].mean() == pytest.approx(p_image[1:4].mean(), rel=0.3)
    assert d_sino.std() == pytest.approx(2 * d_base.std(), rel=0.15)  # std ∝ 1/√N₀
    y = sino(images[:2], np.random.default_rng(3))
    assert y.shape == images[:2].shape and y.dtype == np.float32


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
        ("photon_noise", {"photons_per_pixel": 0}, "photons_per_pixel"),
        ("photon_noise", {"baseline_photons_per_pixel": -1}, "baseline_photons_per_pixel"),
        ("photon_noise", {"mu_air": 0.2}, "mu_air"),
        ("photon_noise", {"disp_window": [800, -1200]}, "disp_window"),
        ("photon_noise", {"disp_window": 400}, "disp_window"),
        ("photon_noise", {"n0": 1e5}, "n0"),
        ("photon_noise", {"mode": "kspace"}, "mode"),
        ("nlm", {"h": 0}, "h"),
        ("nlm", {"patch_size": 2.5}, "patch_size"),
        ("lowpass", {"kind": "gaussian"}, "kind"),
        ("lowpass", {"order": 0}, "order"),
    ],
)
def test_bad_parameters_name_themselves(family, params, name):
    with pytest.raises(ParamError, match=name) as e:
        get_artifact(family, **params)
    assert e.value.param == name and e.value.family == family


def test_unknown_family():
    with pytest.raises(ParamError, match="unknown artifact family") as e:
        get_artifact("jpeg")
    assert e.value.param is None and "photon_noise" in str(e.value)


def test_disp_window_takes_a_list_and_stays_hashable():
    art = get_artifact("photon_noise", disp_window=[-1000, 1000])
    assert art.params["disp_window"] == (-1000.0, 1000.0)
    assert art == get_artifact("photon_noise", disp_window=(-1000, 1000)) and hash(art)


# Outputs of the pre-registry code (commit 0b1fa95) on this project's numpy: the band artifact and
# the protocol with it must stay bit-identical (the quick sweep's numbers depend on it). A numpy
# whose FFT rounds differently changes these digests too; regenerate them only with a reason.
BAND_DIGESTS = {
    (0.25, 0.1): "69a3c262c3a87062",
    (0.75, 0.2): "7a3c56096516d392",
    (0.5, 0.3): "3c4adae4bc7228b6",
}
SPLITS_DIGESTS = ["339304cee398c1b6", "be79f087ec9712af", "efadae502a73131b", "e650209330aa68bc"]


def digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()[:16]


def test_band_and_its_splits_are_bit_identical_to_before_the_registry():
    from spectral_ray.data.registry import ImageDataset
    from spectral_ray.protocol import make_splits

    x = reference_images(32, 6, seed=3).copy()
    for (omega, amp), expected in BAND_DIGESTS.items():
        assert digest(get_artifact("band", omega=omega, amplitude=amp)(x, np.random.default_rng(1))) == expected
    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(0, 2, 30), 2)
    ds = ImageDataset(reference_images(32, 60, seed=5).copy(), labels, ["a", "b"], np.repeat(np.arange(30), 2), "t", {})
    s = make_splits(ds, get_artifact("band", omega=0.25, amplitude=0.1), 0.5, 1, 0)
    assert [digest(getattr(s, n).images) for n in ("train", "val", "test_iid", "test_ood")] == SPLITS_DIGESTS


def test_registry_declares_each_family_in_one_place():
    from spectral_ray.config import TrialConfig

    for name, fam in FAMILIES.items():
        assert fam.name == name and callable(fam.fn) and fam.summary
        for key, param in fam.trial_keys.items():
            assert key in TrialConfig.model_fields and param in fam.params
    assert FAMILIES["band"].trial_keys == {"artifact_omega": "omega", "artifact_amplitude": "amplitude"}
    assert FAMILIES.trial_keys() == ["artifact_omega", "artifact_amplitude"]
    assert FAMILIES.ignored_keys("nlm") == ["artifact_omega", "artifact_amplitude"]
    with pytest.raises(ValueError, match="registered twice"):
        FAMILIES.register("band")(lambda x, rng, p: x)
    with pytest.raises(ValueError, match="trial key"):
        Registry("artifact").register("x", params={}, trial_keys={"artifact_omega": "omega"})(lambda x, rng, p: x)


def test_protocol_gives_every_image_the_baseline_and_the_artifact_images_the_artifact_instead():
    """The lab's design: every image of train/val/test at the baseline dose, the artifact images
    at the artifact's dose instead (drawn on the original image, not on top of the baseline)."""
    from spectral_ray.data.registry import ImageDataset
    from spectral_ray.protocol import make_splits

    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(0, 2, 30), 2)
    ds = ImageDataset(reference_images(32, 60, seed=5).copy(), labels, ["a", "b"], np.repeat(np.arange(30), 2), "t", {})
    noise = get_artifact("photon_noise", photons_per_pixel=1e5, baseline_photons_per_pixel=4e5)
    s0, s1 = make_splits(ds, noise, 0.0, 1, 0), make_splits(ds, noise, 1.0, 1, 0)
    clean = make_splits(ds, None, 0.0, 1, 0)
    for name in ("train", "val", "test_iid", "test_ood"):
        assert not np.isclose(getattr(s0, name).images, getattr(clean, name).images).all(axis=(1, 2, 3)).any(), name
    # baseline draws do not depend on d: the images without the artifact are the same at d = 0 and 1
    keep = ~s1.artifact_mask["train"]
    assert s1.artifact_mask["train"].any() and keep.any()
    np.testing.assert_array_equal(s1.train.images[keep], s0.train.images[keep])
    # artifact images: the noisier dose, on the original image
    hit = s1.artifact_mask["train"]
    d_art = (s1.train.images[hit] - clean.train.images[hit]).std()
    d_base = (s0.train.images[hit] - clean.train.images[hit]).std()
    assert d_art == pytest.approx(2 * d_base, rel=0.15)  # std ∝ 1/√N₀, N₀ 4× lower
    # test_iid and test_ood share their positives (same baseline draws); negatives carry the artifact
    pos = s0.test_iid.labels == 1
    np.testing.assert_array_equal(s0.test_iid.images[pos], s0.test_ood.images[pos])
    assert not np.isclose(s0.test_iid.images[~pos], s0.test_ood.images[~pos]).all()
    # the fixed test set keeps one baseline for every trial (any seed, fold or d): one probe set
    other = make_splits(ds, noise, 0.5, 0, 3)
    np.testing.assert_array_equal(other.test_iid.images, s0.test_iid.images)
    # no baseline: the clean splits are untouched
    np.testing.assert_array_equal(make_splits(ds, "band", 0.0, 1, 0).test_iid.images, clean.test_iid.images)
